"""Pooled PostgreSQL connections broken under the pool (a database restart, an administrator's kill): found by a
ping after idleness, or by the failing statement in steady use; never handed out twice. One session factory per
engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.store.db import get_engine, make_engine, read_first, session_factory
from core.store.jobs import record_progress
from core.store.tables import ApiKey, Job, Metric, new_id
from tests.conftest import PG, make_settings, migrate, wait_for


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


def terminate(pid: int) -> None:
    """End one server process, as a restart does to every pooled connection, and wait until it is gone."""
    with psycopg.connect(PG, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s"
        wait_for(lambda: admin.execute(gone, (pid,)).fetchone()[0], 10, 0.05, what=f"backend {pid} to exit")


def test_an_idle_connection_is_pinged_and_replaced_when_broken(pg_url) -> None:
    engine = make_engine(pg_url, 1, 0, 5.0, ping_after_idle_s=0.0)
    try:
        first = backend_pid(engine)
        terminate(first)
        assert backend_pid(engine) != first  # the ping failed, the pool reconnected: no error reached the caller
    finally:
        engine.dispose()


def test_a_connection_in_steady_use_is_not_pinged_and_is_recycled_after_it_fails(pg_url) -> None:
    """No ping within ``ping_after_idle_s`` (the round trip it saves is the point), so the statement meets the
    broken connection; the pool then replaces it."""
    engine = make_engine(pg_url, 1, 0, 5.0, ping_after_idle_s=3600.0)
    try:
        first = backend_pid(engine)
        terminate(first)
        with pytest.raises(DBAPIError) as caught:
            backend_pid(engine)
        assert caught.value.connection_invalidated
        assert backend_pid(engine) != first
    finally:
        engine.dispose()


def test_read_first_reads_once_more_on_a_fresh_connection(tmp_path, pg_url, redis_url) -> None:
    """The status poll's read does not fail on a connection broken since its last use."""
    settings = make_settings(tmp_path, pg_url, redis_url, db_pool_size=1, db_max_overflow=0,
                             db_ping_after_idle_s=3600.0)  # fmt: skip
    first = read_first(settings, select(func.pg_backend_pid()))[0]
    terminate(first)
    assert read_first(settings, select(func.pg_backend_pid()))[0] != first


def test_read_first_passes_other_errors_on(tmp_path, pg_url, redis_url) -> None:
    settings = make_settings(tmp_path, pg_url, redis_url)
    with pytest.raises(DBAPIError) as caught:
        read_first(settings, text("SELECT 1 / 0"))
    assert not caught.value.connection_invalidated and "division by zero" in str(caught.value)


def test_sessions_of_one_engine_come_from_one_factory(tmp_path, pg_url, redis_url) -> None:
    """A sessionmaker per call would define a Session subclass per request (see core.store.db.session_factory)."""
    settings = make_settings(tmp_path, pg_url, redis_url)
    factory = session_factory(settings)
    assert session_factory(make_settings(tmp_path, pg_url, redis_url)) is factory
    assert session_factory(make_settings(tmp_path, pg_url, redis_url, db_pool_size=3)) is not factory  # another engine
    with factory() as session:
        assert session.bind is get_engine(settings) and session.scalar(text("SELECT 1")) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_timestamps_read_back_timezone_aware_in_utc(tmp_path, pg_url, backend) -> None:
    """SQLite keeps no zone: without the column type's help its timestamps came back naive (no ``Z`` in the API)."""
    url = pg_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'zones.db'}"
    if backend == "sqlite":
        migrate(url)
    engine = create_engine(url)
    evening_in_paris = datetime(2026, 12, 3, 21, 30, tzinfo=timezone(timedelta(hours=1)))
    key = ApiKey(owner="o", name="n", prefix=new_id()[:16], key_hash="h", created_at=evening_in_paris)
    try:
        with Session(engine) as session:
            session.add(key)
            session.commit()
            key_id = key.id
        with Session(engine) as session:
            created = session.get(ApiKey, key_id).created_at
    finally:
        engine.dispose()
    assert created.tzinfo is UTC and created == datetime(2026, 12, 3, 20, 30, tzinfo=UTC)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_progress_with_more_points_than_one_statement_takes_is_written(tmp_path, pg_url, backend) -> None:
    """The worker writes a step's 4 points every 2 s, and keeps them while the database is away: 8,000 steps
    pending (a fast run, or a minute's outage) are 32,000 points. In one INSERT they took 160,000 parameters, which
    PostgreSQL (65,535 at most) refused at every later flush too, so that no progress was written again."""
    url = pg_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'progress.db'}"
    if backend == "sqlite":
        migrate(url)
    engine = create_engine(url)
    series = ("loss", "lr", "temperature", "samples_per_s")
    points = [(name, step, step // 1000, step / 10) for step in range(1, 8001) for name in series]
    try:
        with Session(engine) as session:
            job = Job(owner="o", name="fast", config={}, queue="cpu", status="running", worker="w")
            session.add(job)
            session.commit()
            record_progress(session, job.id, "w", {"step": 8000}, points)
            record_progress(session, job.id, "w", {}, [("loss", 8000, 7, -1.0)])  # a repeated step overwrites
            session.commit()
            stored = session.execute(select(Metric.name, func.count(), func.max(Metric.step)).where(
                Metric.job_id == job.id).group_by(Metric.name)).all()  # fmt: skip
            last = session.scalar(select(Metric.value).where(Metric.job_id == job.id, Metric.name == "loss",
                                                             Metric.step == 8000))  # fmt: skip
            assert session.get(Job, job.id).step == 8000
    finally:
        engine.dispose()
    assert sorted(stored) == [(name, 8000, 8000) for name in sorted(series)]
    assert last == -1.0
