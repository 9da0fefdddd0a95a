"""The FastAPI application factory: ``uvicorn --factory api.main:create_app``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api.datasets.router import router as datasets_router
from api.deps import refuse_unknown_form, refuse_unknown_query
from api.docs import mount_docs
from api.embeddings.cache import ModelCache
from api.embeddings.router import router as embeddings_router
from api.errors import ERROR_RESPONSES, install_error_handlers
from api.health.router import router as health_router
from api.jobs.router import polls as job_polls_router
from api.jobs.router import router as jobs_router
from api.keys.router import router as keys_router
from api.metrics import Metrics
from api.middleware import RequestContext
from api.models.banks import Banks
from api.models.router import router as models_router
from api.ratelimit import RateLimiter
from api.threads import ReadThreads
from api.ttlcache import TTLCache
from api.ui.router import mount_ui
from core.allocator import keep_freed_memory
from core.store.logs import configure_logging
from core.store.settings import Settings, get_settings
from core.store.storage import Storage


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (the environment's by default)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    keep_freed_memory()  # every forward pass frees and asks again for its activations (core/allocator.py)
    read_threads = ReadThreads(settings.api_read_threads)

    @asynccontextmanager
    async def lifespan(started: FastAPI) -> AsyncIterator[None]:
        yield
        read_threads.close()
        started.state.metrics.close()

    app = FastAPI(
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks for configured providers on every request unless it is told it is off
        telemetry=None if settings.otel else {"tracing": False, "metrics": False, "logs": False},
        title="embedtrain",
        version="0.1.0",
        docs_url=None,  # served by mount_docs, from local files
        redoc_url=None,
        description="Train contrastive (NT-Xent) embedding models on your data and serve them through an "
        "OpenAI-compatible /v1/embeddings. Every route but /healthz and /readyz needs `Authorization: Bearer <key>`.",
    )
    app.state.settings = settings
    app.state.storage = Storage(settings.storage_root)
    app.state.metrics = Metrics(settings)
    app.state.model_cache = ModelCache(
        settings.model_cache_size,
        settings.embed_batch_size,
        settings.embed_batch_wait_ms,
        settings.embed_forward_workers,
        settings.embed_trace,
        app.state.metrics,
    )
    app.state.read_threads = read_threads
    app.state.auth_cache = TTLCache(settings.auth_cache_s, read_threads)
    app.state.model_lookup = TTLCache(settings.model_lookup_cache_s, read_threads)
    app.state.neighbor_banks = Banks(settings.model_cache_size)  # bounded like the model cache
    app.state.job_limiter = RateLimiter(settings.rate_jobs_per_min)
    app.state.embed_limiter = RateLimiter(settings.rate_embeddings_per_min)
    install_error_handlers(app)

    app.add_middleware(RequestContext, settings=settings, metrics=app.state.metrics)
    app.include_router(health_router)
    # routes are matched in order: the hottest paths (embeddings, then the status poll) first; they overlap with no other.
    # The two plain routes read no query; /v1/embeddings, the OpenAI route, takes what OpenAI clients may add.
    for router in (embeddings_router, job_polls_router):
        app.include_router(router, responses=ERROR_RESPONSES)
    for router in (jobs_router, datasets_router, models_router, keys_router):
        app.include_router(router, responses=ERROR_RESPONSES,
                           dependencies=[Depends(refuse_unknown_query), Depends(refuse_unknown_form)])  # fmt: skip
    mount_docs(app)
    mount_ui(app)
    # Everything imported so far (torch, pydantic, SQLAlchemy: ~300k objects) lives as long as the process; a full
    # garbage collection walks it all, a ~0.2 s pause of every request on a 2-core machine (bench/api.py's p99).
    # Frozen objects are skipped by the collector; what requests allocate is collected as usual.
    gc.freeze()
    return app
