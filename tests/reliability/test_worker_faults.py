"""Faults made real: a worker SIGKILLed or shut down mid-training, a stale lease, a broker restart."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from core.store.db import transaction
from core.store.jobs import sweep
from core.store.tables import Dataset, Job, JobEvent, utcnow
from tests.conftest import WorkerProcess, make_settings, wait_for
from tests.worker.test_job_lifecycle import job_of, submit, upload, vector_config, vectors_csv, wait_end


def events(client, auth, job_id: str) -> list[dict]:
    return client.get(f"/v1/jobs/{job_id}/events", headers=auth).json()


def _checkpointed_job(client, auth, epochs: int, checkpoints: int) -> tuple[dict, str]:
    """A job that a running worker took and that has written ``checkpoints`` checkpoints (every 100 steps), and the
    URL of its checkpoints."""
    dataset = upload(client, auth, vectors_csv())
    job = submit(client, auth, dataset["id"], vector_config(epochs=epochs, checkpoint_every_steps=100))
    url = f"/v1/jobs/{job['id']}/checkpoints"
    wait_for(lambda: len(client.get(url, headers=auth).json()) >= checkpoints, 120, what=f"{checkpoints} checkpoints")
    return job, url


def _kill_and_recover(client, auth, settings, tmp_path) -> None:
    """SIGKILL the worker of a running job; a second worker must finish it from its last checkpoint."""
    first = WorkerProcess(settings, tmp_path / "first.log", "first").start()
    try:
        job, checkpoints = _checkpointed_job(client, auth, epochs=120, checkpoints=2)
        saved = client.get(checkpoints, headers=auth).json()[-1]["step"]
        first.kill(signal.SIGKILL)  # no cleanup, no ack, no final write
        killed_at = job_of(client, auth, job["id"])
        assert killed_at["status"] == "running" and killed_at["progress"]["step"] < killed_at["progress"]["total_steps"]
    finally:
        first.stop()
    second = WorkerProcess(settings, tmp_path / "second.log", "second").start()
    try:
        done = wait_end(client, auth, job["id"], timeout=240)
    finally:
        second.stop()
    assert done["status"] == "succeeded", (done, second.output()[-2000:])
    assert done["attempts"] == 2 and done["progress"]["step"] == done["progress"]["total_steps"]
    kinds = [e["kind"] for e in events(client, auth, job["id"])]
    assert kinds[:2] == ["queued", "running"] and "requeued" in kinds and kinds[-1] == "succeeded"
    resumed = [e["message"] for e in events(client, auth, job["id"]) if e["kind"] == "resumed"]
    assert resumed and resumed[0].endswith(f"step-{saved:08d}"), resumed  # from its last checkpoint, not step 0
    series = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth).json()["series"]
    for name in ("loss", "lr", "samples_per_s"):
        assert [p["step"] for p in series[name]] == list(range(1, done["progress"]["total_steps"] + 1)), name


@pytest.mark.slow
def test_sigkilled_worker_job_resumes_from_its_checkpoint_on_another_worker(client, auth, settings, tmp_path) -> None:
    _kill_and_recover(client, auth, settings, tmp_path)


@pytest.mark.slow
def test_sigkill_on_the_embedded_default_loses_no_job(tmp_path) -> None:
    """SQLite + the filesystem broker: the transport alone would lose the task; the lease and sweeper do not."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.store.keys import create_key
    from tests.conftest import migrate

    url = f"sqlite:///{tmp_path}/embedded.db"
    migrate(url)
    settings = make_settings(tmp_path, url, "filesystem://")
    with transaction(settings) as session:
        _, key = create_key(session, "embedded", "test")
    with TestClient(create_app(settings)) as client:
        _kill_and_recover(client, {"Authorization": f"Bearer {key}"}, settings, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "shutdown",
    [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]],
    ids=["warm (SIGTERM, as docker stop)", "cold (Ctrl-C twice)"],
)
def test_a_worker_shut_down_mid_training_hands_its_job_back(client, auth, settings, tmp_path, shutdown) -> None:
    """A worker told to stop does not hold its shutdown until the job ends, nor fail the job: the job stops, goes
    back to the queue without using an attempt, and the next worker resumes it from its last checkpoint. Before,
    a warm shutdown waited for the whole job, and a cold one failed it with an internal error (Celery's solo pool
    raises NotImplementedError from the signal handler, in the middle of a step)."""
    first = WorkerProcess(settings, tmp_path / "first.log", "first").start()
    try:
        job, checkpoints = _checkpointed_job(client, auth, epochs=150, checkpoints=1)
        for sig in shutdown:
            first.proc.send_signal(sig)
            time.sleep(0.3)
        first.proc.wait(timeout=30)  # well before the job could have ended
    finally:
        first.stop()
    handed = job_of(client, auth, job["id"])
    assert handed["status"] == "queued" and handed["attempts"] == 0, (handed, first.output()[-3000:])
    assert "job failed" not in first.output()
    requeued = [e["message"] for e in events(client, auth, job["id"]) if e["kind"] == "requeued"]
    assert len(requeued) == 1 and "shut down" in requeued[0] and "handed back" in requeued[0], requeued
    saved = client.get(checkpoints, headers=auth).json()[-1]["step"]

    second = WorkerProcess(settings, tmp_path / "second.log", "second").start()
    try:
        done = wait_end(client, auth, job["id"], timeout=300)
    finally:
        second.stop()
    assert done["status"] == "succeeded" and done["attempts"] == 1, (done, second.output()[-2000:])
    resumed = [e["message"] for e in events(client, auth, job["id"]) if e["kind"] == "resumed"]
    assert resumed and resumed[0].endswith(f"step-{saved:08d}"), resumed
    series = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth).json()["series"]
    assert [p["step"] for p in series["loss"]] == list(range(1, done["progress"]["total_steps"] + 1))


def _running_job(settings, attempts: int, heartbeat_age_s: float, cancel: bool = False) -> str:
    with transaction(settings) as session:
        dataset = Dataset(owner="o", name="d", modality="vectors", format="csv", storage_key="x", size_bytes=1,
                          sha256="0" * 64, num_records=10)  # fmt: skip
        session.add(dataset)
        session.flush()
        then = utcnow() - timedelta(seconds=heartbeat_age_s)
        job = Job(owner="o", name="stale", dataset_id=dataset.id, config={}, queue=f"{settings.queue_prefix}cpu",
                  status="running", attempts=attempts, worker="gone:1", heartbeat_at=then,
                  lease_expires_at=then + timedelta(seconds=settings.lease_s), cancel_requested=cancel)  # fmt: skip
        session.add(job)
        session.flush()
        return job.id


def test_stale_jobs_are_requeued_or_failed_by_the_documented_rule(settings) -> None:
    retry = _running_job(settings, attempts=1, heartbeat_age_s=60)
    give_up = _running_job(settings, attempts=settings.max_attempts, heartbeat_age_s=60)
    cancelled = _running_job(settings, attempts=1, heartbeat_age_s=60, cancel=True)
    alive = _running_job(settings, attempts=1, heartbeat_age_s=0)
    with transaction(settings) as session:
        resend = {job.id for job in sweep(session, settings.max_attempts, settings.requeue_after_s)}
    assert retry in resend and give_up not in resend and alive not in resend
    with transaction(settings) as session:
        state = {
            job.id: job for job in session.scalars(select(Job).where(Job.id.in_([retry, give_up, cancelled, alive])))
        }
        assert state[retry].status == "queued"
        assert state[give_up].status == "failed" and "gave up after 3 attempts" in state[give_up].error
        assert "stopped renewing its lease" in state[give_up].error and "train.batch_size" in state[give_up].error
        assert state[cancelled].status == "cancelled"
        assert state[alive].status == "running"
        kinds = session.scalars(select(JobEvent.kind).where(JobEvent.job_id == retry)).all()
        assert kinds == ["requeued"]


def test_a_queued_job_no_worker_takes_says_so_once_in_its_events(settings) -> None:
    """A job sent to a queue no worker takes (``device: cuda`` with CPU workers only) stayed queued without a word:
    the sweeper sent it again every REQUEUE_AFTER_S. Its first re-send now leaves a ``waiting`` event naming the
    queue and what to check; later re-sends add none. A job just re-queued after a lost lease gets none."""
    stale = _running_job(settings, attempts=1, heartbeat_age_s=60)
    long_ago = utcnow() - timedelta(seconds=settings.requeue_after_s + 5)
    with transaction(settings) as session:
        sent = Job(owner="o", name="gpu", dataset_id=None, config={}, queue=f"{settings.queue_prefix}gpu",
                   status="queued", dispatched_at=long_ago)  # fmt: skip
        fresh = Job(owner="o", name="new", dataset_id=None, config={}, queue=f"{settings.queue_prefix}cpu",
                    status="queued", dispatched_at=utcnow())  # fmt: skip
        session.add_all([sent, fresh])
        session.flush()
        sent_id, fresh_id = sent.id, fresh.id
    for _ in range(2):  # the first sweep says it; the second (sent again meanwhile) adds nothing
        with transaction(settings) as session:
            resend = [job.id for job in sweep(session, settings.max_attempts, settings.requeue_after_s)]
            session.execute(update(Job).where(Job.id == sent_id).values(dispatched_at=long_ago))
        assert resend.count(sent_id) == 1 and resend.count(stale) <= 1 and fresh_id not in resend, resend
    with transaction(settings) as session:
        events = session.scalars(select(JobEvent).where(JobEvent.job_id.in_([sent_id, stale, fresh_id]))).all()
    said = [(e.job_id, e.kind) for e in events]
    assert said.count((sent_id, "waiting")) == 1 and (stale, "waiting") not in said and fresh_id not in dict(said)
    (waiting,) = [e.message for e in events if e.kind == "waiting"]
    assert f"queue '{settings.queue_prefix}gpu'" in waiting and "train.device 'cuda' needs a GPU worker" in waiting


def _restart_redis() -> None:
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], capture_output=True, timeout=20)
    subprocess.run(["bash", ".ci/services.sh"], check=True, capture_output=True, timeout=120)


@pytest.mark.slow
def test_broker_restart_loses_no_queued_or_running_job(tmp_path, pg_url, redis_url, keys) -> None:
    """Redis without persistence forgets every message on restart; the database re-sends them."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    settings = make_settings(tmp_path, pg_url, redis_url, requeue_after_s=3.0)
    auth = {"Authorization": f"Bearer {keys.make('broker')}"}
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        with TestClient(create_app(settings)) as client:
            dataset = upload(client, auth, vectors_csv(n=64))
            running = submit(client, auth, dataset["id"], vector_config(epochs=60, batch_size=16))["id"]
            wait_for(lambda: job_of(client, auth, running)["status"] == "running", 60, what="the first job to run")
            queued = [
                submit(client, auth, dataset["id"], vector_config(epochs=1, batch_size=16))["id"] for _ in range(2)
            ]
            _restart_redis()  # the queued jobs' messages are gone; the running job's connection breaks
            ended = [wait_end(client, auth, job_id, timeout=180) for job_id in [running, *queued]]
    finally:
        worker.stop()
    assert [job["status"] for job in ended] == ["succeeded"] * 3, (ended, worker.output()[-3000:])


def test_a_heartbeat_too_slow_for_its_lease_is_refused_at_start(monkeypatch) -> None:
    """EMBEDTRAIN_HEARTBEAT_S=100 beside the 60 s lease was taken: every lease then expired between beats, and the
    sweeper handed each running job to another worker while the first still trained it. A lease must outlive two
    missed beats (a beat that fails is tried again at the next)."""
    from pydantic import ValidationError

    from core.store.settings import Settings

    for beat in ("100", "20"):  # 20: the lease would end as the third beat renews it
        monkeypatch.setenv("EMBEDTRAIN_HEARTBEAT_S", beat)
        with pytest.raises(ValidationError, match=rf"EMBEDTRAIN_HEARTBEAT_S \({beat}.0 s\) must be under a third of "
                                                  r"EMBEDTRAIN_LEASE_S \(60.0 s\)"):  # fmt: skip
            Settings()
    monkeypatch.setenv("EMBEDTRAIN_HEARTBEAT_S", "19")
    assert Settings().heartbeat_s == 19.0
