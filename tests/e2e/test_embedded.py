"""The embedded default: `make run`'s own processes (SQLite, filesystem broker, one worker), over HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, wait_for
from tests.e2e.flow import digits_flow


class EmbeddedService:
    """`make run` in its own process group, with its state under a temporary directory."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDTRAIN_")}
        env.update(
            EMBEDTRAIN_DATABASE_URL=f"sqlite:///{tmp}/embedtrain.db",
            EMBEDTRAIN_STORAGE_ROOT=str(tmp / "storage"),
            EMBEDTRAIN_BROKER_DIR=str(tmp / "broker"),
            EMBEDTRAIN_QUEUE_PREFIX=f"e{uuid.uuid4().hex[:6]}-",
            EMBEDTRAIN_PROGRESS_INTERVAL_S="0.5",
            EMBEDTRAIN_LEASE_S="6",
            EMBEDTRAIN_HEARTBEAT_S="1",
            EMBEDTRAIN_SWEEP_INTERVAL_S="1",
        )
        self.env = env
        self.log = tmp / "make-run.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(["make", "--no-print-directory", "run", f"PORT={self.port}"], cwd=ROOT,
                                         env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def admin_key(self) -> str:
        match = wait_for(lambda: re.search(r"Admin API key \(shown once, store it now\): (\S+)", self.output()), 120,
                         what="the admin key to be printed")  # fmt: skip
        return match.group(1)

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"make run exited: {self.output()[-3000:]}")
            try:
                return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 120, what="the embedded API to be ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        time.sleep(0.2)


@pytest.fixture
def embedded(tmp_path: Path):
    service = EmbeddedService(tmp_path)
    try:
        yield service
    finally:
        service.stop()


@pytest.mark.slow
def test_make_run_serves_the_whole_flow_without_servers(embedded: EmbeddedService) -> None:
    key = embedded.admin_key()
    wait_for(lambda: f"API docs: http://127.0.0.1:{embedded.port}/docs" in embedded.output(), 60,
             what="the docs URL to be printed")  # fmt: skip
    embedded.wait_ready()
    with httpx.Client(base_url=embedded.base, timeout=60) as client:
        assert client.get("/v1/jobs").status_code == 401
        digits_flow(client, {"Authorization": f"Bearer {key}"}, embedded.tmp / "storage",
                    expected_queue=embedded.env["EMBEDTRAIN_QUEUE_PREFIX"] + "cpu")  # fmt: skip


def test_ctrl_c_stops_make_run_once_and_leaves_nothing_running(embedded: EmbeddedService) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole foreground group: make, its shell, the worker and the API.
    The shell stops its two children once and waits for them; it used to signal its own group from its handler,
    which ran the handler again, so the worker printed thousands of warm shutdowns and make crashed."""
    embedded.wait_ready()
    os.killpg(embedded.proc.pid, signal.SIGINT)
    embedded.proc.wait(timeout=60)

    def group_empty() -> bool:
        try:
            os.killpg(embedded.proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(group_empty, 30, what="make run's processes to exit")
    output = embedded.output()
    assert output.count("Warm shutdown") <= 2, output[-3000:]  # the worker's answer to SIGINT, at most repeated once
    assert "Traceback" not in output and "Segmentation fault" not in output, output[-3000:]
