"""The worker's Celery app: the shared broker config, the tasks, and the sweeper started with the worker.

Run with a pool that never forks after CUDA is initialised: ``--pool solo`` (one job at a time, one worker
process per GPU) is what ``make run`` and Compose use.
"""

from __future__ import annotations

import gc
import logging

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from core.allocator import keep_freed_memory
from core.store.broker import celery_config
from core.store.logs import configure_logging
from core.store.settings import get_settings

settings = get_settings()
configure_logging(settings.log_level)
keep_freed_memory()  # each training step frees and asks again for the same large buffers (core/allocator.py)
app = Celery("embedtrain-worker", include=["worker.tasks"])
app.conf.update(celery_config(settings))

log = logging.getLogger("embedtrain.worker")


@worker_ready.connect
def _start_sweeper(**_: object) -> None:
    from worker.sweeper import start_sweeper

    gc.freeze()  # torch, Celery and SQLAlchemy live as long as the worker: keep full collections from walking them

    start_sweeper(get_settings())
    if get_settings().worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(get_settings().worker_metrics_port)


@worker_shutting_down.connect
def _stop_the_job(**_: object) -> None:
    """Runs in the signal handler that starts the shutdown: the running job hands itself back (worker/heartbeat.py)."""
    from worker.heartbeat import worker_stopping

    worker_stopping.set()


@worker_shutdown.connect
def _stop_sweeper(**_: object) -> None:
    from worker.sweeper import stop_sweeper

    stop_sweeper()
