"""The worker's heartbeat thread against PostgreSQL: it renews the job's lease every ``heartbeat_s``, tells the loop
to stop on a cancel or a lease taken by another worker, and keeps beating through a database that is away."""

from __future__ import annotations

from datetime import timedelta

from core.store.db import transaction
from core.store.jobs import request_cancel
from core.store.tables import Job, utcnow
from tests.conftest import make_settings, wait_for
from tests.worker.database import Database, target, through
from worker.heartbeat import Heartbeat

BEAT_S = 0.2  # the shortest heartbeat Settings take


def _running_job(settings) -> tuple[str, object]:  # noqa: ANN001 - Settings
    """A job running on worker "w" whose last heartbeat was a minute ago; (its id, that time)."""
    then = utcnow() - timedelta(seconds=60)
    with transaction(settings) as session:
        job = Job(owner="heartbeat-test", name="j", config={}, queue="cpu", status="running", worker="w",
                  heartbeat_at=then, lease_expires_at=then + timedelta(seconds=settings.lease_s))  # fmt: skip
        session.add(job)
        session.flush()
        return job.id, then


def _job(settings, job_id: str) -> Job:  # noqa: ANN001 - Settings
    with transaction(settings) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def test_the_heartbeat_renews_the_lease_and_passes_a_cancel_on(tmp_path, pg_url, redis_url) -> None:
    settings = make_settings(tmp_path, pg_url, redis_url, heartbeat_s=BEAT_S)
    job_id, then = _running_job(settings)
    beat = Heartbeat(settings, job_id, "w").start()
    try:
        wait_for(lambda: _job(settings, job_id).heartbeat_at > then, timeout=10, what="a renewed lease")
        renewed = _job(settings, job_id)
        assert renewed.lease_expires_at - renewed.heartbeat_at == timedelta(seconds=settings.lease_s)
        assert not beat.should_stop()
        first = renewed.heartbeat_at
        wait_for(lambda: _job(settings, job_id).heartbeat_at > first, timeout=10, what="a second beat")
        with transaction(settings) as session:
            request_cancel(session, session.get(Job, job_id))
        wait_for(beat.cancelled.is_set, timeout=10, what="the cancel seen by the heartbeat")
        assert beat.should_stop() and not beat.lost.is_set()
    finally:
        beat.stop()
    assert not beat._thread.is_alive()


def test_a_lease_taken_by_another_worker_stops_this_attempt(tmp_path, pg_url, redis_url) -> None:
    """The sweeper gave the job to another worker (this one was presumed dead): this attempt must stop, not write
    over the new one's progress."""
    settings = make_settings(tmp_path, pg_url, redis_url, heartbeat_s=BEAT_S)
    job_id, _ = _running_job(settings)
    with transaction(settings) as session:
        session.get(Job, job_id).worker = "other"
    beat = Heartbeat(settings, job_id, "w").start()
    try:
        wait_for(beat.lost.is_set, timeout=10, what="the lost lease seen by the heartbeat")
        assert beat.should_stop() and not beat.cancelled.is_set()
        assert _job(settings, job_id).worker == "other"
    finally:
        beat.stop()


def test_the_heartbeat_keeps_beating_while_the_database_is_away(tmp_path, pg_url, redis_url) -> None:
    """A database that does not answer fails a beat (after db_timeout_s), not the job: training goes on, and the
    next beat once the database is back renews the lease."""
    direct = make_settings(tmp_path, pg_url, redis_url)
    job_id, then = _running_job(direct)
    db = Database(target(pg_url))
    try:
        settings = make_settings(tmp_path, through(db, pg_url), redis_url, heartbeat_s=BEAT_S, db_timeout_s=0.5)
        beat = Heartbeat(settings, job_id, "w").start()
        try:
            wait_for(lambda: len(db.accepted) >= 3, timeout=20, what="three beats against the silent database")
            assert not beat.should_stop() and beat._thread.is_alive()
            assert _job(direct, job_id).heartbeat_at == then
            db.up = True
            wait_for(lambda: _job(direct, job_id).heartbeat_at > then, timeout=20, what="a beat once it is back")
            assert not beat.should_stop()
        finally:
            beat.stop()
    finally:
        db.close()
