"""The FastAPI application factory: ``uvicorn --factory api.main:create_app``."""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.datasets.router import router as datasets_router
from api.embeddings.cache import ModelCache
from api.embeddings.router import router as embeddings_router
from api.errors import ERROR_RESPONSES, error_body, install_error_handlers
from api.health.router import router as health_router
from api.jobs.router import router as jobs_router
from api.models.router import router as models_router
from api.ratelimit import RateLimiter
from core.store.logs import configure_logging, request_id_var
from core.store.settings import Settings, get_settings
from core.store.storage import Storage

log = logging.getLogger("embedtrain.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (the environment's by default)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    app = FastAPI(
        title="embedtrain",
        version="0.1.0",
        description="Train contrastive (NT-Xent) embedding models on your data and serve them through an "
        "OpenAI-compatible /v1/embeddings. Every route but /healthz and /readyz needs `Authorization: Bearer <key>`.",
    )
    app.state.settings = settings
    app.state.storage = Storage(settings.storage_root)
    app.state.model_cache = ModelCache(
        settings.model_cache_size, settings.embed_batch_size, settings.embed_batch_wait_ms
    )
    app.state.job_limiter = RateLimiter(settings.rate_jobs_per_min)
    app.state.embed_limiter = RateLimiter(settings.rate_embeddings_per_min)
    install_error_handlers(app)

    @app.middleware("http")
    async def request_context(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette's signature
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        request_id = request_id[:64]
        request.state.request_id = request_id
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            return JSONResponse(error_body(400, "invalid Content-Length header"), 400)
        upload = request.headers.get("content-type", "").startswith("multipart/")
        limit = settings.max_upload_bytes + (1 << 20) if upload else settings.max_body_bytes
        if length > limit:
            return JSONResponse(error_body(413, f"request body larger than {limit} bytes"), 413)
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        try:
            response = await call_next(request)
            response.headers["X-Request-ID"] = request_id
            log.info("request", extra={"method": request.method, "path": request.url.path,
                                       "status": response.status_code,
                                       "duration_ms": round((time.perf_counter() - start) * 1000, 2)})  # fmt: skip
        finally:
            request_id_var.reset(token)
        return response

    app.include_router(health_router)
    for router in (datasets_router, jobs_router, models_router, embeddings_router):
        app.include_router(router, responses=ERROR_RESPONSES)
    return app
