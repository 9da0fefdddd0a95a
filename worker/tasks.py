"""Celery tasks: named, given a job id, one call into the pipeline. Safe to run twice (the claim guards)."""

from __future__ import annotations

from core.store.broker import TRAIN_TASK
from core.store.settings import get_settings
from worker.celery_app import app
from worker.pipeline import run_job


@app.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True)
def train_job(job_id: str) -> None:
    """Train one job (re-reads its row; a duplicate delivery of a job owned elsewhere does nothing)."""
    request_id = (train_job.request.headers or {}).get("request_id") if train_job.request else None
    run_job(job_id, get_settings(), request_id=request_id)
