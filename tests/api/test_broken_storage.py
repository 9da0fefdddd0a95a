"""Stored files that went bad after upload or training answer a clear 4xx, never a 500."""

from __future__ import annotations

from sqlalchemy import select

from core.store.db import transaction
from core.store.storage import Storage
from core.store.tables import Checkpoint, Dataset, Job
from tests.api.test_embeddings import listed_versions, trained_model


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
