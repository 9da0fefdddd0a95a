"""A job that starts from a registered model's weights: what it takes from the model, what is refused, and the
checkpoint kept for it until it has ended."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest

from core.store.db import transaction
from core.store.jobs import prune_checkpoints
from core.store.storage import Storage
from core.store.tables import Checkpoint, Job
from core.train.checkpoint import WEIGHTS_FILE, CheckpointError
from tests.api.test_embeddings import trained_model
from worker.pipeline import load_input


def vectors(client, auth, rows: int = 40, features: int = 6) -> str:
    """A dataset of ``rows`` vectors of ``features`` (``trained_model``'s vector model takes 6)."""
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(1).normal(size=(rows, features)).astype(np.float32))
    response = client.post("/v1/datasets", headers=auth, data={"modality": "vectors"},
                           files={"file": ("v.npy", buffer.getvalue())})  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["id"]


def start_body(dataset_id: str, name: str, version: int | None = None, **sections) -> dict:
    config = {"data": {"val_fraction": 0.0}, "train": {"batch_size": 8}, **sections}
    return {"dataset_id": dataset_id, "name": "tuned", "start_from": {"model": name, "version": version},
            "config": config}  # fmt: skip


@pytest.fixture
def base(settings, client, auth) -> tuple[str, dict]:
    """A registered (and deployed) vector model, and its one version as GET /v1/models/{name} lists it."""
    name, _ = trained_model(settings, client, auth, "vectors", name=f"base-{uuid.uuid4().hex[:8]}")
    return name, client.get(f"/v1/models/{name}", headers=auth).json()["versions"][0]


def test_a_job_starts_from_a_models_weights_with_its_model_and_head_sections(client, auth, base) -> None:
    name, version = base
    dataset_id = vectors(client, auth)
    response = client.post("/v1/jobs", headers=auth, json=start_body(dataset_id, name))
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["start_from"] == {"model": name, "version": 1, "checkpoint_id": version["checkpoint_id"]}
    # trained_model's output_dim is 12, not the default 128: the section is the model's
    assert job["config"]["model"] == {"kind": "mlp", "hidden_dim": 256, "num_layers": 2, "output_dim": 12,
                                      "dropout": 0.0}  # fmt: skip
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()
    assert events[0]["message"] == (f"queued on {job['queue']}, to start from model {name!r} version 1 "
                                    f"(checkpoint {version['checkpoint_id']})")  # fmt: skip
    # a config that names its modality, and options that leave the weights' shapes alone, are taken too
    named = start_body(dataset_id, name, 1, head={"serve": "projection"}, model={"hidden_dim": 256})
    named["config"]["data"]["modality"] = "vectors"
    response = client.post("/v1/jobs", headers=auth, json=named)
    assert response.status_code == 202, response.text
    assert response.json()["config"]["model"] == job["config"]["model"]
    assert response.json()["config"]["head"]["serve"] == "projection"
    # a retried submission is the first job; the key reused for another start is refused
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.post("/v1/jobs", headers={**auth, **key}, json=start_body(dataset_id, name))
    again = client.post("/v1/jobs", headers={**auth, **key}, json=start_body(dataset_id, name, 1))
    assert first.status_code == again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    for other in (start_body(dataset_id, name, 2), {**start_body(dataset_id, name), "start_from": None}):
        refused = client.post("/v1/jobs", headers={**auth, **key}, json=other)
        assert refused.status_code == 422 and refused.json()["error"]["param"] == "Idempotency-Key", refused.text


def test_a_start_the_job_cannot_build_is_refused_naming_the_field(client, auth, keys, settings, base) -> None:
    name, version = base
    dataset_id = vectors(client, auth)
    text = client.post("/v1/datasets", headers=auth, data={"modality": "text"},
                       files={"file": ("t.txt", b"".join(b"line %d\n" % i for i in range(40)))}).json()["id"]  # fmt: skip
    other_owner = {"Authorization": f"Bearer {keys.make(f'stranger-{uuid.uuid4().hex[:6]}')}"}
    cases = [
        (auth, start_body(dataset_id, "no-such-model"), 404, "start_from.model", "model 'no-such-model' not found"),
        (auth, start_body(dataset_id, name, 9), 404, "start_from.version", f"model {name!r} has no version 9"),
        (other_owner, start_body(vectors(client, other_owner), name), 404, "start_from.model", "not found"),
        (auth, start_body(dataset_id, name, model={"hidden_dim": 64, "num_layers": 3}), 422, "config.model",
         f"config.model must build the weights of model {name!r} version 1, which the job starts from: "
         "model.hidden_dim 64 (the model's 256), model.num_layers 3 (the model's 2); leave it out of the config to "
         "take the model's own"),
        (auth, start_body(dataset_id, name, model={"dropout": 0.2}), 422, "config.model",  # a layer more
         "model.dropout 0.2 (the model's 0.0)"),
        (auth, start_body(dataset_id, name, head={"projection_dim": 32}), 422, "config.head",
         "head.projection_dim 32 (the model's 128)"),
        (auth, start_body(vectors(client, auth, features=5), name), 422, "start_from.model",
         f"model {name!r} version 1 takes 6 features; the dataset's records have 5"),
        (auth, start_body(text, name), 422, "start_from.model", f"model {name!r} version 1 embeds vectors; the "
         "dataset holds text"),
    ]  # fmt: skip
    for headers, request, status, field, message in cases:
        response = client.post("/v1/jobs", headers=headers, json=request)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["param"] == field and message in error["message"], error
    with transaction(settings) as session:  # last: a model whose weights are gone from storage
        key = session.get(Checkpoint, version["checkpoint_id"]).storage_key
    (Storage(settings.storage_root).path(key) / WEIGHTS_FILE).unlink()
    response = client.post("/v1/jobs", headers=auth, json=start_body(dataset_id, name))
    assert response.status_code == 409 and response.json()["error"]["param"] == "start_from.model", response.text
    assert response.json()["error"]["message"].startswith(f"model {name!r} version 1: checkpoint "), response.text


def test_the_checkpoint_a_job_starts_from_is_kept_until_the_job_has_ended(client, auth, settings, base) -> None:
    name, version = base
    job = client.post("/v1/jobs", headers=auth, json=start_body(vectors(client, auth), name)).json()
    source_id, start_id = version["job_id"], version["checkpoint_id"]
    assert client.post(f"/v1/models/{name}/undeploy", headers=auth).status_code == 200
    assert client.delete(f"/v1/models/{name}", headers=auth).status_code == 200  # the registration goes
    # ... the checkpoint stays: the source job's pruning keeps it, and its deletion is refused
    with transaction(settings) as session:
        for step in (1000, 2000):  # newer checkpoints of the source job, the newest of which pruning keeps
            session.add(Checkpoint(job_id=source_id, step=step, epoch=0, storage_key=f"checkpoints/x/{step}"))
    with transaction(settings) as session:
        assert prune_checkpoints(session, source_id, keep=1) == ["checkpoints/x/1000"]
    refused = client.delete(f"/v1/jobs/{source_id}", headers=auth)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["message"] == (f"job {source_id}'s checkpoint is where job {job['id']} starts "
                                                  "from; wait until it has ended, or cancel it")  # fmt: skip
    # once the job has ended, both may go; the job keeps the record of where it started
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()["status"] == "cancelled"
    # ... unless it is resumed first: queued again, it holds its start checkpoint again
    assert client.post(f"/v1/jobs/{job['id']}/resume", headers=auth).json()["status"] == "queued"
    assert client.delete(f"/v1/jobs/{source_id}", headers=auth).status_code == 409
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()["status"] == "cancelled"
    assert client.delete(f"/v1/jobs/{source_id}", headers=auth).status_code == 204
    refused = client.post(f"/v1/jobs/{job['id']}/resume", headers=auth)  # refused now, not failed in the worker
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["message"] == (f"job {job['id']} has no checkpoint of its own, and the one it "
                                                  f"starts from (model {name!r} version 1) was deleted; submit a new "
                                                  "job")  # fmt: skip
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["start_from"]["checkpoint_id"] == start_id
    with transaction(settings) as session:
        row = session.get(Job, job["id"])
        assert row.start_checkpoint_id is None
        row.status = "queued"  # as if it had been queued still: the worker finds nothing to start from, and says so
    with pytest.raises(CheckpointError, match=rf"the checkpoint this job starts from \({start_id}, of model "
                                              rf"'{name}'\) was deleted; submit the job again"):  # fmt: skip
        load_input(settings, Storage(settings.storage_root), job["id"])
    with transaction(settings) as session:  # a checkpoint row of its own whose files never became whole: the same
        session.add(Checkpoint(job_id=job["id"], step=3, epoch=0, storage_key=f"checkpoints/{job['id']}/step-00000003"))
    with pytest.raises(CheckpointError, match="was deleted; submit the job again"):  # before: new weights, unsaid
        load_input(settings, Storage(settings.storage_root), job["id"])
