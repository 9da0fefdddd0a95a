"""Jobs through a real Celery worker on PostgreSQL and Redis: cancel, resume, late bad data, NaN, two processes."""

from __future__ import annotations

import numpy as np
import pytest

from core.store.storage import Storage
from tests.conftest import wait_for


def vectors_csv(n: int = 200, features: int = 8, seed: int = 0, scale: float = 1.0) -> bytes:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.normal(size=(n, features)) + labels[:, None] * 2.0
    x[:, 0] *= scale
    lines = [",".join([f"f{i}" for i in range(features)] + ["label"])]
    lines += [",".join([repr(float(v)) for v in row] + [str(label)]) for row, label in zip(x, labels, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def upload(client, auth, content: bytes, name: str = "v.csv", modality: str = "vectors") -> dict:
    response = client.post("/v1/datasets", headers=auth, data={"modality": modality},
                           files={"file": (name, content)})  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()


def vector_config(**train) -> dict:
    return {
        "data": {"modality": "vectors", "val_fraction": 0.1},
        "model": {"kind": "mlp", "hidden_dim": 32, "output_dim": 16},
        "head": {"hidden_dim": 32, "projection_dim": 8},
        "eval": {"knn_k": 5, "linear_probe": False},
        "train": {"epochs": 2, "batch_size": 16, "checkpoint_every_steps": 10, **train},
    }


def submit(client, auth, dataset_id: str, config: dict) -> dict:
    response = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "config": config})
    assert response.status_code == 202, response.text
    return response.json()


def job_of(client, auth, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}", headers=auth).json()


def wait_end(client, auth, job_id: str, timeout: float = 120) -> dict:
    return wait_for(lambda: (j := job_of(client, auth, job_id))["status"] in ("succeeded", "failed", "cancelled") and j,
                    timeout, what=f"job {job_id} to end")  # fmt: skip


@pytest.mark.slow
def test_cancel_a_running_job_keeps_its_last_checkpoint(client, auth, worker) -> None:
    dataset = upload(client, auth, vectors_csv())
    job = submit(client, auth, dataset["id"], vector_config(epochs=500, checkpoint_every_steps=50))
    wait_for(lambda: job_of(client, auth, job["id"])["progress"]["step"] > 20, 60, what="the job to make progress")
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"] is True
    job = wait_end(client, auth, job["id"], timeout=30)
    assert job["status"] == "cancelled", job
    assert job["error"].startswith("cancelled at step ") and job["progress"]["step"] < job["progress"]["total_steps"]
    checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()
    assert checkpoints and checkpoints[-1]["step"] == job["progress"]["step"]  # written when it stopped
    kinds = [e["kind"] for e in client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()]
    assert kinds[-2:] == ["cancel_requested", "cancelled"]
    # a model can be registered from the cancelled job's last checkpoint
    model = client.post("/v1/models", headers=auth, json={"job_id": job["id"], "checkpoint": "last", "name": "part"})
    assert model.status_code == 201, model.text


@pytest.mark.slow
def test_a_cancelled_job_resumed_goes_on_from_its_last_checkpoint(client, auth, worker) -> None:
    """POST /v1/jobs/{id}/resume: the worker takes the job again and goes on from the checkpoint written when it
    stopped, not from the start; cancelled again, it stops further on, after one attempt of its own."""
    dataset = upload(client, auth, vectors_csv())
    config = vector_config(epochs=500, checkpoint_every_steps=50, keep_checkpoints=None)  # the one it stopped at stays
    job_id = submit(client, auth, dataset["id"], config)["id"]
    wait_for(lambda: job_of(client, auth, job_id)["progress"]["step"] > 20, 60, what="the job to make progress")
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 202
    first = wait_end(client, auth, job_id, timeout=30)
    assert first["status"] == "cancelled", first
    stop = first["progress"]["step"]
    resumed = client.post(f"/v1/jobs/{job_id}/resume", headers=auth)
    assert resumed.status_code == 202 and resumed.json()["status"] == "queued", resumed.text
    wait_for(lambda: (j := job_of(client, auth, job_id))["status"] == "running" and j["progress"]["step"] > stop + 20,
             60, what="the resumed job to make progress")  # fmt: skip
    events = client.get(f"/v1/jobs/{job_id}/events", headers=auth).json()
    said = [(e["kind"], e["message"]) for e in events]
    assert ("resume_requested", f"resumed by its owner after it was cancelled: it goes on from its checkpoint at step "
            f"{stop}") in said, said  # fmt: skip
    assert ("resumed", f"resuming from checkpoint checkpoints/{job_id}/step-{stop:08d}") in said, said
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 202
    second = wait_end(client, auth, job_id, timeout=30)
    assert second["status"] == "cancelled" and second["progress"]["step"] > stop + 20, second
    assert second["attempts"] == 1, second
    steps = [c["step"] for c in client.get(f"/v1/jobs/{job_id}/checkpoints", headers=auth).json()]
    assert stop in steps and steps[-1] == second["progress"]["step"], steps


def test_a_job_evaluates_on_its_held_out_dataset(client, auth, worker) -> None:
    """``data.val_dataset_id`` through a worker: every evaluation, from the starting weights' on, runs on the named
    dataset, and the job's picture of held-out embeddings draws its records, all 37 of them (a tenth of the
    training dataset, the default share, would be 20)."""
    train = upload(client, auth, vectors_csv(n=200))["id"]
    held = upload(client, auth, vectors_csv(n=37, seed=5), name="held.csv")["id"]
    config = vector_config(epochs=2)
    config["data"] = {"modality": "vectors", "val_dataset_id": held}
    job = wait_end(client, auth, submit(client, auth, train, config)["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["total_steps"] == 2 * (200 // 16)  # trained on every record of its dataset
    series = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth).json()["series"]
    assert [p["step"] for p in series["knn_top1"]] == [0, 12, 24], series.keys()
    picture = client.get(f"/v1/jobs/{job['id']}/projection", headers=auth)
    assert picture.status_code == 200 and len(picture.json()["points"]) == 37, picture.text


@pytest.mark.slow
def test_bad_data_found_late_fails_the_job_with_a_message(client, auth, worker, settings) -> None:
    dataset = upload(client, auth, vectors_csv())
    # the stored file goes bad after upload (disk fault, tampering): the worker finds out when it reads it
    with client_db_key(settings, dataset["id"]) as path:
        path.write_bytes(b"f0,f1\n1.0\n2.0,3.0,4.0\n")
    job = wait_end(client, auth, submit(client, auth, dataset["id"], vector_config())["id"])
    assert job["status"] == "failed"
    assert "cannot be read" in job["error"] or "number" in job["error"], job["error"]


@pytest.mark.slow
def test_overflowing_values_fail_the_job_with_an_actionable_nan_message(client, auth, worker) -> None:
    """Values that overflow on the way through the model fail the job saying so: at the evaluation of the starting
    weights, before any step (metrics of NaN, which JSON cannot hold, would fail the job as an internal error), or
    without that evaluation, at the first step's loss."""
    dataset = upload(client, auth, vectors_csv(scale=3e37))  # finite float32, but their variance overflows
    job = wait_end(client, auth, submit(client, auth, dataset["id"], vector_config())["id"])
    assert job["status"] == "failed"
    assert job["error"].startswith("evaluating the starting weights, before any step, gave val_loss, "), job["error"]
    assert job["error"].endswith("overflow. Values near float32's largest (3.4e38) do on the way through the model: "
                                 "scale the data down"), job["error"]  # fmt: skip
    config = {**vector_config(), "eval": {"knn_k": 5, "linear_probe": False, "at_start": False}}
    job = wait_end(client, auth, submit(client, auth, dataset["id"], config)["id"])
    assert job["status"] == "failed"
    assert "the loss became nan at step 1" in job["error"] and "lower optim.lr" in job["error"]


@pytest.mark.slow
def test_two_process_job_through_the_worker(client, auth, worker) -> None:
    dataset = upload(client, auth, vectors_csv(n=160))
    job = submit(client, auth, dataset["id"], vector_config(num_devices=2, device="cpu", epochs=2))
    job = wait_end(client, auth, job["id"], timeout=180)
    assert job["status"] == "succeeded", (job, worker.output()[-3000:])
    total = (160 - 16) // 16 * 2
    assert job["progress"]["step"] == total
    series = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth).json()["series"]
    assert [p["step"] for p in series["loss"]] == list(range(1, total + 1))
    assert "knn_top1" in series


@pytest.mark.slow
def test_two_process_job_fine_tunes_the_pretrained_text_model(client, auth, worker) -> None:
    """all-MiniLM-L6-v2 has a pooler that neither pooling uses: DistributedDataParallel failed the first step
    ("parameters that were not used in producing loss") until it was frozen."""
    texts = "".join(f'{{"text": "sentence {i} about topic {i % 4}", "label": {i % 4}}}\n' for i in range(48))
    dataset = upload(client, auth, texts.encode(), name="t.jsonl", modality="text")
    config = {"data": {"modality": "text", "val_fraction": 0.2}, "model": {"max_length": 16},
              "eval": {"knn_k": 3, "linear_probe": False},
              "train": {"epochs": 1, "batch_size": 8, "num_devices": 2, "device": "cpu"}}  # fmt: skip
    job = wait_end(client, auth, submit(client, auth, dataset["id"], config)["id"], timeout=240)
    assert job["status"] == "succeeded", (job, worker.output()[-3000:])
    assert job["progress"]["step"] == (48 - 10) // 8


def test_a_training_process_that_raises_names_its_error_in_the_job(settings, tmp_path) -> None:
    """A rank that raises anything but a TrainingError used to end the job with 'exited abnormally (exit codes
    [1, 1])' and nothing else; the job's error now carries the exception (here: a resume from no checkpoint)."""
    from core.config import RunConfig
    from core.data.readers import read_records
    from core.train.loop import TrainingError
    from worker.distributed import run_distributed

    path = tmp_path / "v.csv"
    path.write_bytes(vectors_csv(n=64))
    records = read_records(path, "vectors", "csv", settings.read_limits)

    class NeverStops:  # the heartbeat's one method run_distributed calls; no lease to renew here
        def should_stop(self) -> bool:
            return False

    config = RunConfig.model_validate(vector_config(num_devices=2, device="cpu"))
    with pytest.raises(TrainingError, match=r"training process [01] of 2 failed: CheckpointError: .*no-checkpoint"):
        run_distributed(settings, "job", "test", config, records, None, tmp_path / "out", tmp_path / "no-checkpoint",
                        None, NeverStops())  # fmt: skip


class client_db_key:  # noqa: N801 - used as a context manager
    """The on-disk path of a dataset's stored file (read from the database)."""

    def __init__(self, settings, dataset_id: str) -> None:
        self.settings, self.dataset_id = settings, dataset_id

    def __enter__(self):
        from core.store.db import transaction
        from core.store.tables import Dataset

        with transaction(self.settings) as session:
            key = session.get(Dataset, self.dataset_id).storage_key
        return Storage(self.settings.storage_root).path(key)

    def __exit__(self, *_: object) -> None:
        return None


def test_out_of_memory_is_reported_as_actionable() -> None:
    import torch

    from worker.pipeline import OUT_OF_MEMORY, _is_cpu_oom

    with pytest.raises(RuntimeError) as failed:  # a real failed CPU allocation (4 EiB)
        torch.empty(2**62, dtype=torch.uint8)
    assert _is_cpu_oom(failed.value)
    assert not _is_cpu_oom(RuntimeError("shape mismatch"))
    assert "lower train.batch_size" in OUT_OF_MEMORY


@pytest.mark.slow
def test_the_request_id_follows_the_job_into_the_worker_logs(tmp_path, pg_url, redis_url, keys) -> None:
    import json as _json

    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.conftest import WorkerProcess, make_settings

    settings = make_settings(tmp_path, pg_url, redis_url, log_level="INFO")
    auth = {"Authorization": f"Bearer {keys.make('tracing')}"}
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        with TestClient(create_app(settings)) as client:
            dataset = upload(client, auth, vectors_csv(n=64))
            response = client.post("/v1/jobs", headers={**auth, "X-Request-ID": "trace-abc-123"},
                                   json={"dataset_id": dataset["id"], "config": vector_config(epochs=1)})  # fmt: skip
            job_id = response.json()["id"]
            assert wait_end(client, auth, job_id)["status"] == "succeeded"
    finally:
        worker.stop()
    lines = [_json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    mine = [entry for entry in lines if entry.get("job_id") == job_id]
    assert mine and all(entry.get("request_id") == "trace-abc-123" for entry in mine), mine
    assert any(entry["message"] == "job ended succeeded" for entry in mine)


@pytest.mark.slow
def test_a_label_column_named_at_upload_is_the_label_everywhere_the_dataset_is_read(client, auth, worker) -> None:
    """``label_column`` is a choice of the upload; the worker, the projection and the neighbours read the stored file
    again and must take the same column as the label. Before, they took ``label``: a numeric label column became a
    feature (the model took 9 inputs where the dataset had 8) and ``use_labels`` failed in the worker."""
    content = vectors_csv(n=96).replace(b",label\n", b",category\n", 1)
    response = client.post("/v1/datasets", headers=auth, data={"modality": "vectors", "label_column": "category"},
                           files={"file": ("v.csv", content)})  # fmt: skip
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["details"]["shape"] == [96, 8] and dataset["num_labels"] == 3
    job = wait_end(client, auth, submit(client, auth, dataset["id"], {**vector_config(), "data": {
        "modality": "vectors", "val_fraction": 0.25, "use_labels": True}})["id"])  # fmt: skip
    assert job["status"] == "succeeded", (job, worker.output()[-3000:])
    assert "knn_top1" in job["metrics"]  # evaluated against the labels of 'category'
    projection = client.get(f"/v1/jobs/{job['id']}/projection", headers=auth).json()
    assert {p["label"] for p in projection["points"]} <= {"0", "1", "2"} and projection["points"][0]["label"]
    name = f"category-{job['id'][:8]}"
    assert client.post("/v1/models", headers=auth, json={"job_id": job["id"], "name": name}).status_code == 201
    assert client.post(f"/v1/models/{name}/deploy", headers=auth).status_code == 200
    embedded = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": [[0.5] * 8]})
    assert embedded.status_code == 200, embedded.text  # the model takes the dataset's 8 features


@pytest.mark.slow
def test_pairs_in_columns_named_at_upload_train_and_are_read_so_again(client, auth, worker) -> None:
    """A query/passage file uploaded with ``anchor_column`` and ``positive_column``: the worker trains on its pairs,
    and the projection reads the stored file with the same columns (before the names were kept, both would find no
    'text' column)."""
    rows = "".join(f"question {i} on topic {i % 4},answer {i} about topic {i % 4},t{i % 4}\n" for i in range(48))
    response = client.post("/v1/datasets", headers=auth, files={"file": ("q.csv", f"query,passage,topic\n{rows}")},
                           data={"modality": "text", "anchor_column": "query", "positive_column": "passage",
                                 "label_column": "topic"})  # fmt: skip
    assert response.status_code == 201, response.text
    config = {"data": {"modality": "text", "val_fraction": 0.25}, "model": {"max_length": 16},
              "eval": {"knn_k": 3, "linear_probe": False}, "train": {"epochs": 1, "batch_size": 8}}  # fmt: skip
    job = wait_end(client, auth, submit(client, auth, response.json()["id"], config)["id"], timeout=240)
    assert job["status"] == "succeeded", (job, worker.output()[-3000:])
    assert job["config"]["augment"]["mode"] == "pairs" and "knn_top1" in job["metrics"]
    projection = client.get(f"/v1/jobs/{job['id']}/projection", headers=auth)
    assert projection.status_code == 200, projection.text
    assert {p["label"] for p in projection.json()["points"]} == {"t0", "t1", "t2", "t3"}


@pytest.mark.slow
def test_old_checkpoints_are_pruned_but_the_newest_the_best_and_registered_ones(client, auth, worker, settings) -> None:
    """``train.keep_checkpoints``: the worker deletes older checkpoints (rows, then files) as it writes new ones;
    the newest N, the best and any a model was registered from stay."""
    from core.store.db import transaction
    from core.store.jobs import prune_checkpoints

    dataset = upload(client, auth, vectors_csv(n=96))
    pruned = submit(client, auth, dataset["id"], vector_config(epochs=4, checkpoint_every_steps=2, keep_checkpoints=2))
    kept_all = submit(client, auth, dataset["id"], vector_config(epochs=4, checkpoint_every_steps=2,
                                                                 keep_checkpoints=None))  # fmt: skip
    pruned, kept_all = wait_end(client, auth, pruned["id"]), wait_end(client, auth, kept_all["id"])
    assert pruned["status"] == kept_all["status"] == "succeeded", (pruned, kept_all, worker.output()[-3000:])
    everything = client.get(f"/v1/jobs/{kept_all['id']}/checkpoints", headers=auth).json()
    total = pruned["progress"]["total_steps"]
    interval, epoch_ends = set(range(2, total + 1, 2)), set(range(total // 4, total + 1, total // 4))
    steps_all = {c["step"] for c in everything}  # null keeps every one: the interval's, and better evaluations'
    assert interval <= steps_all <= interval | epoch_ends, (sorted(steps_all), total)

    left = client.get(f"/v1/jobs/{pruned['id']}/checkpoints", headers=auth).json()
    steps = [c["step"] for c in left]
    assert steps[-2:] == [total - 2, total] and len(steps) <= 3, steps  # the newest two, and the best if older
    on_disk = sorted(p.name for p in (settings.storage_root / "checkpoints" / pruned["id"]).iterdir())
    assert on_disk == [f"step-{step:08d}" for step in steps]  # the pruned ones' files are gone too
    best = client.post("/v1/models", headers=auth, json={"job_id": pruned["id"], "checkpoint": "best",
                                                         "name": f"pruned-{pruned['id'][:8]}"})  # fmt: skip
    assert best.status_code == 201 and best.json()["checkpoint_id"] in {c["id"] for c in left}, best.text

    # the rule itself, on the job that kept everything: a registered old checkpoint is never pruned
    oldest = everything[0]
    registered = client.post("/v1/models", headers=auth, json={"job_id": kept_all["id"], "checkpoint": oldest["id"],
                                                               "name": f"old-{kept_all['id'][:8]}"})  # fmt: skip
    assert registered.status_code == 201, registered.text
    with transaction(settings) as session:
        deleted = prune_checkpoints(session, kept_all["id"], keep=2)
    remaining = client.get(f"/v1/jobs/{kept_all['id']}/checkpoints", headers=auth).json()
    assert oldest["id"] in {c["id"] for c in remaining} and [c["step"] for c in remaining][-2:] == [total - 2, total]
    assert len(deleted) == len(everything) - len(remaining) and len(remaining) <= 4


def test_a_dataset_of_one_class_trains_and_its_job_reads_back(client, auth, worker) -> None:
    """Labels of one class leave nothing for the k-NN and the probe to tell apart: the probe's NaN failed the job at
    its first evaluation with "internal error" (on PostgreSQL a DataError: the job's latest metrics are JSON, which
    has no NaN; on SQLite an IntegrityError, NaN being NULL there). The label metrics are now left out where the
    training sample has one class."""
    rng = np.random.default_rng(0)
    rows = "\n".join(f"{a},{b},only" for a, b in rng.normal(size=(60, 2)).tolist())
    dataset = upload(client, auth, f"a,b,label\n{rows}\n".encode())
    config = {**vector_config(epochs=2, batch_size=8), "eval": {"knn_k": 5, "linear_probe": True}}
    config["data"] = {"modality": "vectors", "val_fraction": 0.2}
    job = submit(client, auth, dataset["id"], config)
    ended = wait_end(client, auth, job["id"])
    assert ended["status"] == "succeeded", ended["error"]
    assert "val_loss" in ended["metrics"] and not {"knn_top1", "linear_probe_top1"} & set(ended["metrics"])
    series = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth)
    assert series.status_code == 200 and "val_loss" in series.json()["series"], series.text
    assert "linear_probe_top1" not in series.json()["series"]


def test_a_job_holds_its_dataset_once_while_it_trains(client, auth, settings, monkeypatch) -> None:
    """The split copies the records; the file as read was kept beside the copies until the job ended, so that a
    job held its dataset twice (a 195 MB dataset: 391 MB held while training, 196 MB now). Measured by
    tracemalloc (numpy's arrays are traced) when training begins."""
    import io
    import tracemalloc
    from types import SimpleNamespace

    from core.config import RunConfig
    from core.store.db import transaction
    from core.store.tables import Dataset, Job
    from worker import pipeline

    vectors = np.random.default_rng(0).normal(size=(20_000, 64)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    dataset = upload(client, auth, buffer.getvalue(), name="v.npy")
    config = RunConfig.model_validate({"data": {"modality": "vectors", "val_fraction": 0.1}})
    with transaction(settings) as session:
        owner = session.get(Dataset, dataset["id"]).owner
        job = Job(owner=owner, name="held", dataset_id=dataset["id"], config=config.model_dump(mode="json"),
                  queue="cpu", status="running")  # fmt: skip
        session.add(job)
        session.flush()
        job_id = job.id
    held: list[int] = []

    class TrainingBegan(Exception):
        pass

    def training_begins(*_args: object, **_kwargs: object) -> None:
        held.append(tracemalloc.get_traced_memory()[0])
        raise TrainingBegan

    monkeypatch.setattr(pipeline, "fit", training_begins)
    storage = Storage(settings.storage_root)
    tracemalloc.start()
    try:
        job_input = pipeline.load_input(settings, storage, job_id)
        with pytest.raises(TrainingBegan):
            pipeline._train(settings, storage, job_id, "test", job_input, SimpleNamespace(),
                            SimpleNamespace(should_stop=lambda: False))  # fmt: skip
    finally:
        tracemalloc.stop()
    assert held[0] < 1.25 * vectors.nbytes, (held[0], vectors.nbytes)  # before: 2.0x
    assert len(job_input.train) + len(job_input.val) == len(vectors)


def test_a_job_started_from_a_registered_model_trains_on_from_its_weights(client, auth, worker, settings) -> None:
    """A worker loads the registered checkpoint's weights before the first step: at a learning rate too small to move
    them, the new job's checkpoint holds the model's weights, where the same job without ``start_from`` holds new
    ones."""
    from core.train.checkpoint import load_weights

    dataset = upload(client, auth, vectors_csv(n=96))
    source = wait_end(client, auth, submit(client, auth, dataset["id"], vector_config(epochs=2))["id"])
    assert source["status"] == "succeeded", source["error"]
    name = f"tuned-{source['id'][:8]}"
    registered = client.post("/v1/models", headers=auth, json={"job_id": source["id"], "name": name})
    assert registered.status_code == 201, registered.text
    config = {**vector_config(epochs=1), "optim": {"lr": 1e-9, "weight_decay": 0.0}}
    del config["model"], config["head"]  # the model's own
    other = upload(client, auth, vectors_csv(seed=1))["id"]
    response = client.post("/v1/jobs", headers=auth, json={"dataset_id": other, "config": config,
                                                           "start_from": {"model": name}})  # fmt: skip
    assert response.status_code == 202, response.text
    fresh = submit(client, auth, other, {**vector_config(epochs=1), "optim": config["optim"]})
    started, fresh = wait_end(client, auth, response.json()["id"]), wait_end(client, auth, fresh["id"])
    assert started["status"] == fresh["status"] == "succeeded", (started["error"], fresh["error"])
    events = client.get(f"/v1/jobs/{started['id']}/events", headers=auth).json()
    start_key = f"checkpoints/{source['id']}/step-{source['progress']['total_steps']:08d}"
    assert f"starting from the weights of checkpoint {start_key}" in [e["message"] for e in events]

    storage = Storage(settings.storage_root)
    theirs = load_weights(storage.path(start_key))
    ours, new = ({name: value.numpy() for name, value in load_weights(storage.path(checkpoint)).items()}
                 for job in (started, fresh)
                 for checkpoint in [f"checkpoints/{job['id']}/step-{job['progress']['total_steps']:08d}"])  # fmt: skip
    parameters = [name for name in theirs if not name.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(np.allclose(ours[name], theirs[name], atol=1e-6) for name in parameters)
    assert not all(np.allclose(new[name], theirs[name], atol=1e-3) for name in parameters)


def test_a_job_that_stops_improving_ends_early_and_says_why(client, auth, worker) -> None:
    """``train.early_stop_patience`` through a worker: the job succeeds before its last step, with an event saying at
    which step and why, and its checkpoints end there."""
    dataset = upload(client, auth, vectors_csv(n=96))  # three clusters apart: k-NN top-1 reaches 1.0 and stays
    job = wait_end(
        client, auth, submit(client, auth, dataset["id"], vector_config(epochs=40, early_stop_patience=1))["id"]
    )
    assert job["status"] == "succeeded", job["error"]
    step, total = job["progress"]["step"], job["progress"]["total_steps"]
    assert step < total and job["progress"]["fraction"] == 1.0, job["progress"]  # done, where it stopped
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()
    said = [e["message"] for e in events if e["kind"] == "stopped_early"]
    assert len(said) == 1 and said[0].startswith(f"stopped early at step {step} of {total}: 1 evaluation in a row"), (
        events
    )
    assert client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()[-1]["step"] == step
