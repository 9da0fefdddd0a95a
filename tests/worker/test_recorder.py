"""The worker's progress recorder while the database is away: it backs off, and what waits is bounded."""

from __future__ import annotations

import time

from sqlalchemy import select

from core.store.db import transaction
from core.store.storage import Storage
from core.store.tables import Job, JobEvent, Metric
from core.train.callbacks import StepReport
from tests.conftest import make_settings
from tests.worker.database import Database, target, through
from worker.recorder import STEP_SERIES, DatabaseRecorder


def step(n: int) -> StepReport:
    return StepReport(step=n, total_steps=1000, epoch=0, loss=1.0 / n, lr=0.1, temperature=0.5, samples_per_s=100.0)


def test_steps_back_off_from_a_database_that_does_not_answer(tmp_path, pg_url, redis_url) -> None:
    """One connection attempt, not one a step: each attempt holds the training thread up to db_timeout_s (before,
    20 steps took 40 s here)."""
    db = Database(target(pg_url))
    try:
        settings = make_settings(tmp_path, through(db, pg_url), redis_url, db_timeout_s=1.0, progress_interval_s=0.0)
        recorder = DatabaseRecorder(settings, "job", "worker", Storage(settings.storage_root))
        for n in range(1, 21):
            recorder.on_step(step(n))
        assert len(db.accepted) == 1
        assert len(recorder.pending) == 20 * 4  # every point kept for later
        time.sleep(recorder.MIN_RETRY_S + 0.1)  # the first wait is over: the next step tries again
        for n in range(21, 41):
            recorder.on_step(step(n))
        assert len(db.accepted) == 2
        assert recorder.failures == 2 and len(recorder.pending) == 40 * 4
    finally:
        db.close()


def test_what_waits_for_the_database_is_bounded_and_written_once_it_is_back(tmp_path, pg_url, redis_url) -> None:
    direct = make_settings(tmp_path, pg_url, redis_url)
    with transaction(direct) as session:
        job = Job(owner="recorder-test", name="j", config={}, queue="cpu", status="running", worker="w")
        session.add(job)
        session.flush()
        job_id = job.id
    db = Database(target(pg_url))
    try:
        settings = make_settings(tmp_path, through(db, pg_url), redis_url, db_timeout_s=1.0, progress_interval_s=0.0)
        recorder = DatabaseRecorder(settings, job_id, "w", Storage(settings.storage_root), max_pending_points=100)
        for n in range(1, 201):
            recorder.on_step(step(n))
            assert len(recorder.pending) <= 100
        assert recorder.stride == 8  # 200 steps of 4 points in 100: one step in 8
        kept = sorted({p[1] for p in recorder.pending})
        assert kept == list(range(8, 201, 8)) and {p[0] for p in recorder.pending} == set(STEP_SERIES)
        db.up = True
        time.sleep(recorder.MIN_RETRY_S + 0.1)
        recorder.on_step(step(201))
        assert recorder.failures == 0 and not recorder.pending and recorder.stride == 1
        with transaction(direct) as session:
            written = session.scalars(select(Metric.step).where(Metric.job_id == job_id, Metric.name == "loss")).all()
            events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).all()
            assert session.get(Job, job_id).step == 201
        assert sorted(written) == kept
        assert [e.kind for e in events] == ["metrics_thinned"]
        assert "of steps 1-201" in events[0].message and "one step in 8" in events[0].message, events[0].message
    finally:
        db.close()
