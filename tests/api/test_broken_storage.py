"""Stored files that went bad or went missing after upload or training answer a clear 4xx, never a 500."""

from __future__ import annotations

from sqlalchemy import select

from core.store.db import transaction
from core.store.storage import Storage
from core.store.tables import Checkpoint, Dataset, Job
from tests.api.test_embeddings import listed_versions, trained_model
from tests.conftest import wait_for


def test_a_corrupted_checkpoint_is_refused_with_a_clear_message(client, auth, settings) -> None:
    name, _ = trained_model(settings, client, auth, "vectors")
    with transaction(settings) as session:
        key = session.scalars(select(Checkpoint.storage_key)).all()[-1]
    weights = Storage(settings.storage_root).path(key) / "model.safetensors"
    weights.write_bytes(b"not safetensors")
    client.app.state.model_cache.models.clear()  # force a reload from storage, as a fresh replica would
    response = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": [[0.1] * 6]})
    assert response.status_code == 409, response.text
    assert "cannot be loaded" in response.json()["error"]["message"]
    job_id = listed_versions(client, auth)[0]["job_id"]
    again = client.post("/v1/models", headers=auth, json={"job_id": job_id, "name": "again"})
    assert again.status_code == 409 and "cannot be loaded" in again.json()["error"]["message"]


def test_a_corrupted_dataset_file_gives_422_on_the_projection(client, auth, settings) -> None:
    from tests.e2e.flow import upload_digits

    dataset = upload_digits(client, auth)
    with transaction(settings) as session:
        key = session.get(Dataset, dataset["id"]).storage_key
    Storage(settings.storage_root).path(key).write_bytes(b"PK\x03\x04 broken")
    trained_model(settings, client, auth, "vectors")  # a finished job with a checkpoint
    job_id = listed_versions(client, auth)[0]["job_id"]
    with transaction(settings) as session:
        session.get(Job, job_id).dataset_id = dataset["id"]
    response = client.get(f"/v1/jobs/{job_id}/projection", headers=auth)
    assert response.status_code == 422, response.text
    assert "cannot be read" in response.json()["error"]["message"]


def test_a_dataset_file_missing_from_storage_is_named_by_dataset_not_by_path(client, auth, settings, worker) -> None:
    """A worker without the shared volume, or a file removed by hand. Before, a JSONL dataset's projection and
    neighbours answered 500 (FileNotFoundError), and a job failed with a path of the worker's host ("internal error:
    FileNotFoundError: [Errno 2] … '/…/storage/datasets/….jsonl'"; for a CSV, "the CSV file cannot be read: …",
    blaming the file)."""
    name, _ = trained_model(settings, client, auth, "text", name="text-missing-file")
    version = next(v for v in listed_versions(client, auth) if v["name"] == name)
    with transaction(settings) as session:
        dataset = session.get(Dataset, session.get(Job, version["job_id"]).dataset_id)
        dataset_id, key = dataset.id, dataset.storage_key
    Storage(settings.storage_root).path(key).unlink()
    expected = (f"the file of dataset {dataset_id} is missing from storage: the API and every worker must share one "
                "volume at EMBEDTRAIN_STORAGE_ROOT (a worker on another host needs it too), and nothing may remove "
                "files there; upload the dataset again")  # fmt: skip

    for answer in (client.get(f"/v1/jobs/{version['job_id']}/projection", headers=auth),
                   client.post(f"/v1/models/{name}/neighbors", headers=auth, json={"input": "text number 3"})):  # fmt: skip
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"]["message"] == expected

    config = {"data": {"val_fraction": 0.0}, "model": {"backbone": "tiny-random-bert", "max_length": 16},
              "train": {"epochs": 1, "batch_size": 8}}  # fmt: skip
    job = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "config": config})
    assert job.status_code == 202, job.text
    ended = wait_for(lambda: (j := client.get(f"/v1/jobs/{job.json()['id']}", headers=auth).json())["status"]
                     in ("succeeded", "failed") and j, 120, what="the job to end")  # fmt: skip
    assert (ended["status"], ended["error"]) == ("failed", expected), worker.output()[-2000:]
    assert str(settings.storage_root) not in ended["error"]
