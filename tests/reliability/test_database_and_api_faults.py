"""Faults made real: PostgreSQL stopped under load, an API process killed mid-upload, a crash mid-checkpoint."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.train.checkpoint import is_complete, load_trainer_state, read_config
from tests.conftest import ROOT, WorkerProcess, free_port, make_settings, settings_env, wait_for
from tests.worker.test_job_lifecycle import job_of, submit, upload, vector_config, vectors_csv, wait_end

PG_VERSION = next(iter(sorted(os.listdir("/etc/postgresql"))), None) if os.path.isdir("/etc/postgresql") else None


def _pg(action: str) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, "main", action, *(["-m", "fast"] if action == "stop" else [])],
                   check=True, capture_output=True, timeout=60)  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(PG_VERSION is None, reason="needs a local PostgreSQL cluster that the test may stop")
def test_database_outage_gives_503_then_recovers_and_the_worker_retries(tmp_path, pg_url, redis_url, keys) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    settings = make_settings(tmp_path, pg_url, redis_url, lease_s=60.0, db_timeout_s=2.0)
    auth = {"Authorization": f"Bearer {keys.make('outage')}"}
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        with TestClient(create_app(settings)) as client:
            dataset = upload(client, auth, vectors_csv())
            job = submit(client, auth, dataset["id"], vector_config(epochs=150, checkpoint_every_steps=200))
            wait_for(lambda: job_of(client, auth, job["id"])["progress"]["step"] > 10, 60, what="progress")
            _pg("stop")
            try:
                start = time.monotonic()
                down = client.get(f"/v1/jobs/{job['id']}", headers=auth)
                assert time.monotonic() - start < 10  # an answer, not a hang
                assert down.status_code == 503 and down.headers["Retry-After"] == "5"
                assert down.json()["error"]["message"] == "the database is unavailable; retry shortly"
                assert client.get("/readyz").status_code == 503
                time.sleep(3)  # the worker keeps training and keeps its progress for later
            finally:
                _pg("start")
            wait_for(lambda: client.get("/readyz").status_code == 200, 60, what="recovery")
            done = wait_end(client, auth, job["id"], timeout=240)
            assert done["status"] == "succeeded", (done, worker.output()[-3000:])
            total = done["progress"]["total_steps"]
            series = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth).json()["series"]
            assert [p["step"] for p in series["loss"]] == list(range(1, total + 1))  # nothing lost in the outage
    finally:
        worker.stop()


class ApiProcess:
    def __init__(self, settings, log: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1", "--port",
             str(self.port)], cwd=ROOT, env=settings_env(settings), stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: self._up(), 60, what="the API process")

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)


@pytest.mark.slow
def test_api_killed_mid_upload_lists_nothing_half_written_and_retries_are_idempotent(tmp_path, pg_url, redis_url, keys):
    settings = make_settings(tmp_path, pg_url, redis_url)
    auth = {"Authorization": f"Bearer {keys.make('restart')}"}
    api = ApiProcess(settings, tmp_path / "api.log")
    body = vectors_csv(n=20000, features=16)  # several MB, sent slowly

    def slow_body():
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]
            time.sleep(0.05)

    boundary = "xBOUNDARYx"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"modality\"\r\n\r\nvectors\r\n--{boundary}\r\n"
            f"Content-Disposition: form-data; name=\"file\"; filename=\"v.csv\"\r\n\r\n").encode()  # fmt: skip

    def multipart():
        yield head
        yield from slow_body()
        yield f"\r\n--{boundary}--\r\n".encode()

    import threading

    def upload_slowly() -> None:
        with contextlib.suppress(httpx.HTTPError):  # expected: the server is killed under the upload
            httpx.post(f"{api.base}/v1/datasets", headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                       content=multipart(), timeout=60)  # fmt: skip

    sender = threading.Thread(target=upload_slowly)
    sender.start()
    time.sleep(1.0)
    api.kill()
    sender.join(timeout=60)

    api = ApiProcess(settings, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=api.base, headers=auth, timeout=30) as client:
            assert client.get("/v1/datasets").json()["total"] == 0  # nothing half-written is listed
            dataset = upload(client, auth, vectors_csv(n=64))
            payload = {"dataset_id": dataset["id"], "config": vector_config()}
            first = client.post("/v1/jobs", json=payload, headers={"Idempotency-Key": "retry-me"}).json()
            api.kill()  # the client never saw the answer... and retries against a restarted API
            api = ApiProcess(settings, tmp_path / "api.log")
            client.base_url = api.base
            again = client.post("/v1/jobs", json=payload, headers={"Idempotency-Key": "retry-me"})
            assert again.status_code == 202 and again.json()["id"] == first["id"]
            assert client.get("/v1/jobs").json()["total"] == 1
    finally:
        api.kill()


def test_a_crash_mid_checkpoint_leaves_the_previous_one_usable(tmp_path) -> None:
    """SIGKILL a process while it writes a checkpoint: the previous one loads, the partial one is invisible."""
    script = f"""
import sys, time, numpy as np
sys.path.insert(0, {str(ROOT)!r})
import safetensors.torch as st
from core.config import RunConfig
from core.data import Records
from core.train import checkpoint
from core.train.loop import fit
config = RunConfig.model_validate({{"data": {{"modality": "vectors", "val_fraction": 0.0}},
                                    "train": {{"epochs": 1, "batch_size": 8, "checkpoint_every_steps": 2}}}})
records = Records("vectors", vectors=np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32))
fit(config, records, None, checkpoint_dir={str(tmp_path)!r}, should_stop=iter([False, False, True]).__next__)
real = checkpoint.save_file
def slow(tensors, path, metadata=None):
    real(tensors, path, metadata=metadata)
    print("WRITING", flush=True)
    time.sleep(60)
checkpoint.save_file = slow
fit(config, records, None, checkpoint_dir={str(tmp_path)!r}, resume_from={str(tmp_path / "step-00000002")!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=20)
    good = tmp_path / "step-00000002"
    assert is_complete(good) and load_trainer_state(good).step == 2 and read_config(good)[0].train.batch_size == 8
    leftovers = [p for p in tmp_path.iterdir() if p.name != "step-00000002"]
    assert leftovers and all(p.name.startswith(".step-") and ".tmp-" in p.name for p in leftovers)
    assert not any(is_complete(p) for p in leftovers)
