"""Shared fixtures: real PostgreSQL and Redis on loopback, a migrated throwaway database, real workers.

``make test`` starts PostgreSQL and Redis when they are installed but stopped; here we only check that they
answer, and fail with a clear message when they do not.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psycopg
import pytest
import redis
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits

from core.store.db import transaction
from core.store.keys import create_key
from core.store.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("EMBEDTRAIN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("EMBEDTRAIN_TEST_REDIS", "redis://127.0.0.1:6379")


def migrate(url: str, command: str = "upgrade", revision: str = "head") -> None:
    """``alembic upgrade head`` (or another ``command`` to ``revision``) against ``url``, the way deployments run it."""
    env = {**os.environ, "EMBEDTRAIN_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "alembic", command, revision], cwd=ROOT, env=env, check=True,
                   capture_output=True)  # fmt: skip


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped at the end."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL does not answer at {PG} ({error}); run the suite with `make test`")
    yield PG.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{name}"
    # a fresh connection: a test may have restarted PostgreSQL since the database was created
    with psycopg.connect(PG, autocommit=True, connect_timeout=30) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database with the migrations applied, dropped at the end."""
    with fresh_database("embedtrain_test") as url:
        migrate(url)
        yield url


@pytest.fixture
def empty_pg() -> Iterator[str]:
    """A PostgreSQL database the migrations were never run on, dropped at the end."""
    with fresh_database("embedtrain_empty") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = f"{REDIS}/5"
    try:
        redis.Redis.from_url(url, socket_timeout=3).ping()
    except redis.RedisError as error:
        pytest.fail(f"Redis does not answer at {REDIS} ({error}); run the suite with `make test`")
    return url


def make_settings(tmp: Path, database_url: str, broker_url: str, **overrides) -> Settings:
    values = dict(
        database_url=database_url,
        broker_url=broker_url,
        broker_dir=tmp / "broker",
        storage_root=tmp / "storage",
        queue_prefix=f"t{uuid.uuid4().hex[:8]}-",
        lease_s=6.0,
        heartbeat_s=1.0,
        sweep_interval_s=1.0,
        requeue_after_s=30.0,
        progress_interval_s=0.5,
        rate_jobs_per_min=1000,
        auth_cache_s=0.0,
        model_lookup_cache_s=0.0,
        log_level="WARNING",
    )
    values.update(overrides)
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDTRAIN_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        env[f"EMBEDTRAIN_{name.upper()}"] = str(value)
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def settings(tmp_path: Path, pg_url: str, redis_url: str) -> Settings:
    return make_settings(tmp_path, pg_url, redis_url)


class Keys:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def make(self, owner: str, admin: bool = False) -> str:
        with transaction(self.settings) as session:
            _, key = create_key(session, owner, "test", is_admin=admin)
        return key


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def auth(keys: Keys) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.make(f'user-{uuid.uuid4().hex[:6]}')}"}


class WorkerProcess:
    """A real ``celery worker`` process (solo pool) consuming this test's queues."""

    def __init__(self, settings: Settings, log_path: Path, name: str = "w") -> None:
        self.settings, self.log_path, self.name = settings, log_path, name
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        queues = f"{self.settings.queue_prefix}cpu,{self.settings.queue_prefix}gpu"
        cmd = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool", "solo",
               "--concurrency", "1", "-Q", queues, "-n", f"{self.name}-{uuid.uuid4().hex[:6]}@%h",
               "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop(), outlives this method
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=settings_env(self.settings), stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if b"ready." in self.log_path.read_bytes():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in 60 s: {self.log_path.read_text()[-3000:]}")

    def kill(self, sig: int = 9) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, tmp_path / "worker.log").start()
    yield process
    process.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def digits_npz() -> bytes:
    """scikit-learn's load_digits as an NPZ upload: (1797, 8, 8) uint8 images and labels."""
    digits = load_digits()
    buffer = io.BytesIO()
    np.savez(buffer, images=np.round(digits.images / 16.0 * 255).astype(np.uint8), labels=digits.target)
    return buffer.getvalue()


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.3, what: str = "condition"):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
