"""Engine and sessions. One engine per URL per process; SQLite gets WAL and a busy timeout.

Connections broken under the pool (a database restart): a pooled PostgreSQL connection that sat idle for
``ping_after_idle_s`` (``EMBEDTRAIN_DB_PING_AFTER_IDLE_S``) is pinged as it is checked out, and replaced if the
ping fails. One in steady use is not pinged: SQLAlchemy's ``pool_pre_ping`` pings at every checkout, a second round
trip for each one-statement request, and without it the status poll's read alone runs 1.27-1.30x as many reads/s
at 85-90 us less CPU a read (bench/api.py's ``poll_read_alone``, three runs on the 2-core AMD EPYC VM;
bench/RESULTS.md "API under load"). A connection that broke while in steady use fails its statement instead;
SQLAlchemy then recycles every connection of the pool opened before the failure, the request gets a 503 with
``Retry-After`` (:mod:`api.errors`), and :func:`read_first` reads once more on a fresh connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Row, create_engine, event
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

from core.store.settings import Settings


def make_engine(url: str, pool_size: int, max_overflow: int, timeout: float, ping_after_idle_s: float) -> Engine:
    """An engine for ``url``: pooled, with ``timeout`` to connect and to wait for the pool (see the module
    docstring for how broken connections are found)."""
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
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=timeout,
        connect_args={"connect_timeout": max(1, int(timeout))},
    )

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection, record) -> None:  # noqa: ANN001 - DB-API objects
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy) -> None:  # noqa: ANN001
        idle_since = record.info.get("idle_since")  # none yet: a connection just opened
        if idle_since is None or time.monotonic() - idle_since < ping_after_idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # the database went away since: every connection of the pool opened before is recycled, this one now
            raise InvalidatePoolError(f"an idle pooled connection is broken: {error}") from error

    return engine


_engine = lru_cache(maxsize=8)(make_engine)


def get_engine(settings: Settings) -> Engine:
    """The engine for these settings (one per process)."""
    return _engine(settings.database_url, settings.db_pool_size, settings.db_max_overflow, settings.db_timeout_s,
                   settings.db_ping_after_idle_s)  # fmt: skip


@lru_cache(maxsize=8)
def _autocommit(engine: Engine) -> Engine:
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def read_connection(settings: Settings) -> Connection:
    """A connection for single-statement reads: no BEGIN/ROLLBACK round trips, no ORM; same pool."""
    return _autocommit(get_engine(settings)).connect()


def read_first(settings: Settings, statement: Executable, parameters: dict[str, Any] | None = None) -> Row | None:
    """The first row of a one-statement read (:func:`read_connection`), read once more on a fresh connection if
    the pooled one turns out broken (a database restart since its last use: see the module docstring).

    A hot read should pass a statement built once, with ``bindparam`` placeholders, and its values as
    ``parameters``: SQLAlchemy derives a statement's cache key once per statement object, and building the poll's
    ``select`` and its key at every read took a third of the read's CPU (bench/api.py's ``poll_statement``).
    """

    def read() -> Row | None:
        with read_connection(settings) as connection:
            return connection.execute(statement, parameters).first()

    try:
        return read()
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    return read()  # the pool has recycled its connections opened before the failure


@lru_cache(maxsize=8)
def _sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    """Sessions bound to the settings' engine; objects stay readable after commit.

    One factory per engine: each ``sessionmaker`` defines a new ``Session`` subclass and sets up its event dispatch,
    117 us against 7.5 us for a session from an existing factory (SQLite in memory, 5,000 of each, on the 2-core VM).
    """
    return _sessionmaker(get_engine(settings))


@contextmanager
def transaction(settings: Settings) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on error (for workers and scripts)."""
    with session_factory(settings)() as session, session.begin():
        yield session
