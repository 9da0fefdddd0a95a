"""Start the service for a benchmark: API (uvicorn) and optionally a worker, as separate processes.

Embedded by default (SQLite + filesystem broker in a temporary directory, like ``make run``); pass a
PostgreSQL URL and a Redis URL to measure the deployed configuration.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """API + worker processes over one database, broker and storage root."""

    def __init__(self, database_url: str | None = None, broker_url: str | None = None, api_workers: int = 1,
                 worker: bool = True, **settings: str) -> None:  # fmt: skip
        self.tmp = Path(tempfile.mkdtemp(prefix="embedtrain-bench-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDTRAIN_")}
        self.env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            EMBEDTRAIN_DATABASE_URL=database_url or f"sqlite:///{self.tmp}/bench.db",
            EMBEDTRAIN_BROKER_URL=broker_url or "filesystem://",
            EMBEDTRAIN_BROKER_DIR=str(self.tmp / "broker"),
            EMBEDTRAIN_STORAGE_ROOT=str(self.tmp / "storage"),
            EMBEDTRAIN_QUEUE_PREFIX=f"b{uuid.uuid4().hex[:6]}-",
            EMBEDTRAIN_LOG_LEVEL="WARNING",
            EMBEDTRAIN_RATE_JOBS_PER_MIN="1000000",
            EMBEDTRAIN_RATE_EMBEDDINGS_PER_MIN="100000000",
            **{f"EMBEDTRAIN_{k.upper()}": str(v) for k, v in settings.items()},
        )
        api_env = dict(self.env)
        if api_workers > 1:  # as Compose runs them: the API processes' metrics in one directory (api/metrics.py)
            (self.tmp / "prometheus").mkdir()
            api_env["PROMETHEUS_MULTIPROC_DIR"] = str(self.tmp / "prometheus")
        self.api_workers = api_workers
        self._run(["-m", "alembic", "upgrade", "head"])
        out = self._run(["-m", "core.store.admin", "keys", "create", "--owner", "bench", "--admin"])
        self.key = out.strip().splitlines()[0]
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.procs.append(self._spawn(["-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
                                       "--port", str(self.port), "--workers", str(api_workers),
                                       "--log-level", "warning"], "api.log", api_env))  # fmt: skip
        if worker:
            prefix = self.env["EMBEDTRAIN_QUEUE_PREFIX"]
            self.procs.append(self._spawn(["-m", "celery", "-A", "worker.celery_app", "worker", "--pool", "solo",
                                           "-Q", f"{prefix}cpu,{prefix}gpu", "--loglevel", "WARNING"], "worker.log"))  # fmt: skip
        self._wait_ready()

    def api_pids(self) -> list[int]:
        """The processes that serve the API: the one uvicorn runs in, or those its supervisor started."""
        supervisor = self.procs[0].pid
        if self.api_workers == 1:
            return [supervisor]
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        # uvicorn's workers run multiprocessing's spawn_main; its resource tracker does not serve
        return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def metric_samples(self) -> list[tuple[str, str]]:
        """The server's Prometheus samples (name with labels, value), summed over its API processes by /metrics."""
        text = httpx.get(f"{self.base}/metrics", headers=self.headers, timeout=10).text
        return [line.rpartition(" ")[::2] for line in text.splitlines() if not line.startswith("#")]

    def _run(self, args: list[str]) -> str:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=self.env, check=True, capture_output=True,
                              text=True).stdout  # fmt: skip

    def _spawn(self, args: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.tmp / log, "ab") as out:
            return subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, env=env or self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"service not ready; see {self.tmp}")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        self.stop()
        if error_type is None:  # its database, checkpoints and logs: ~265 MB a serving run, left in /tmp before
            shutil.rmtree(self.tmp)
        else:
            print(f"the service's logs, database and storage are kept in {self.tmp}", file=sys.stderr)


def wait_job(client: httpx.Client, job_id: str, timeout: float = 3600, interval: float = 1.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(interval)  # polling costs the API (and so the worker, on a small machine) CPU
    raise TimeoutError(job_id)
