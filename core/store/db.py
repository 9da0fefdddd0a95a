"""Engine and sessions. One engine per URL per process; SQLite gets WAL and a busy timeout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.store.settings import Settings


@lru_cache(maxsize=8)
def _engine(url: str, pool_size: int, max_overflow: int, timeout: float) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": timeout, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API objects
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the worker's writes
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=timeout,
        pool_pre_ping=True,  # a connection broken by a database restart is replaced, not handed out
        connect_args={"connect_timeout": max(1, int(timeout))},
    )


def get_engine(settings: Settings) -> Engine:
    """The engine for these settings."""
    return _engine(settings.database_url, settings.db_pool_size, settings.db_max_overflow, settings.db_timeout_s)


@lru_cache(maxsize=8)
def _autocommit(engine: Engine) -> Engine:
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def read_connection(settings: Settings) -> Connection:
    """A connection for single-statement reads: no BEGIN/ROLLBACK round trips, no ORM; same pool."""
    return _autocommit(get_engine(settings)).connect()


def session_factory(settings: Settings) -> sessionmaker[Session]:
    """Sessions bound to the settings' engine; objects stay readable after commit."""
    return sessionmaker(get_engine(settings), expire_on_commit=False)


@contextmanager
def transaction(settings: Settings) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on error (for workers and scripts)."""
    with session_factory(settings)() as session, session.begin():
        yield session
