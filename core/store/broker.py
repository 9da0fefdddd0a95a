"""The Celery client side: broker configuration shared by the API (which only sends) and the worker.

Tasks are sent by name, so the API never imports worker code. The database stays the source of truth: no
result backend is used, and a lost message is re-sent by the sweeper (see :mod:`core.store.jobs`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

from core.store.settings import Settings

TRAIN_TASK = "embedtrain.train_job"
SWEEP_TASK = "embedtrain.sweep"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for the API and the workers."""
    options: dict[str, Any] = {}
    if settings.broker_url.startswith("filesystem"):
        folder = settings.broker_dir.resolve()
        for sub in ("messages", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        options = {
            "data_folder_in": str(folder / "messages"),
            "data_folder_out": str(folder / "messages"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),  # else kombu writes ./control in the working directory
            "store_processed": False,
        }
    elif settings.broker_url.startswith(("redis", "rediss")):
        # A delivered but unacknowledged message comes back only after this long: it must outlast the
        # longest job, or a long job would be delivered twice. The sweeper re-sends sooner when a worker dies.
        options = {"visibility_timeout": settings.job_time_limit_s + 3600}
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": options,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_acks_late": True,  # acknowledged after the task returns: a killed worker's job is delivered again
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.job_time_limit_s,
        "task_default_queue": queue_name(settings, "cpu"),
        "worker_hijack_root_logger": False,
    }


@lru_cache(maxsize=4)
def _client(settings_json: str) -> Celery:
    settings = Settings.model_validate_json(settings_json)
    app = Celery("embedtrain-client")
    app.conf.update(celery_config(settings))
    return app


def client(settings: Settings) -> Celery:
    """A Celery app that only sends tasks."""
    return _client(settings.model_dump_json())


def queue_name(settings: Settings, device: str) -> str:
    """The queue for a device kind (``cpu`` or ``gpu``), with the deployment's prefix."""
    return f"{settings.queue_prefix}{device}"


def queue_for(settings: Settings, device: str) -> str:
    """Route a job by its configured device: cuda to the gpu queue, cpu to cpu, auto as configured."""
    kind = {"cuda": "gpu", "cpu": "cpu"}.get(device, settings.auto_device_queue)
    return queue_name(settings, kind)


def send_train(settings: Settings, job_id: str, queue: str, request_id: str | None) -> None:
    """Send a job's training task (after its row is committed)."""
    client(settings).send_task(TRAIN_TASK, args=[job_id], queue=queue, headers={"request_id": request_id or ""})
