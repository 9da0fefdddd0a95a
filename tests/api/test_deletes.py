"""Deleting jobs and model versions: what each refuses, what it removes (rows and files), and what stays."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from core.store.db import transaction
from core.store.storage import Storage
from core.store.tables import Checkpoint, Job, JobEvent, Metric, ModelVersion
from tests.api.test_embeddings import listed_versions, trained_model
from tests.api.test_jobs import body, dataset


def rows_of(settings, job_id: str) -> dict[str, int]:  # noqa: ANN001 - the test's settings
    with transaction(settings) as session:
        return {table.__name__: session.scalar(select(func.count()).select_from(table).where(table.job_id == job_id))
                for table in (Checkpoint, JobEvent, Metric, ModelVersion)}  # fmt: skip


def test_a_finished_job_and_its_model_versions_are_deleted_in_order(client, auth, settings, keys) -> None:
    name, _ = trained_model(settings, client, auth, "vectors", name=f"gone-{uuid.uuid4().hex[:8]}")
    (version,) = listed_versions(client, auth)
    job_id = version["job_id"]
    with transaction(settings) as session:
        session.add_all([JobEvent(job_id=job_id, kind="succeeded", message="done"),
                         Metric(job_id=job_id, name="loss", step=1, epoch=0, value=1.0)])  # fmt: skip
    files = Storage(settings.storage_root).checkpoint_dir(job_id)
    assert any(files.iterdir()) and all(rows_of(settings, job_id).values())

    refused = client.delete(f"/v1/jobs/{job_id}", headers=auth)  # a model version serves its checkpoint
    assert refused.status_code == 409 and f"{name} version 1" in refused.json()["error"]["message"], refused.text
    refused = client.delete(f"/v1/models/{name}", headers=auth)
    assert refused.status_code == 409 and "undeploy it first" in refused.json()["error"]["message"], refused.text
    other = {"Authorization": f"Bearer {keys.make(f'other-{uuid.uuid4().hex[:6]}')}"}
    assert client.delete(f"/v1/models/{name}", headers=other).status_code == 404
    assert client.delete(f"/v1/jobs/{job_id}", headers=other).status_code == 404
    assert client.get(f"/v1/models/{name}", headers=auth).json()["deployed_version"] == 1  # nothing was touched

    assert client.post(f"/v1/models/{name}/undeploy", headers=auth).status_code == 200
    assert client.delete(f"/v1/models/{name}?version=2", headers=auth).status_code == 404
    deleted = client.delete(f"/v1/models/{name}?version=1", headers=auth)
    assert deleted.status_code == 200 and deleted.json() == {"id": name, "object": "model", "deleted": True,
                                                            "versions": [1]}  # fmt: skip
    assert client.get(f"/v1/models/{name}", headers=auth).status_code == 404
    assert any(files.iterdir())  # the version went; the job's checkpoint stays until the job goes

    assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 204
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 404
    assert not files.exists() and not any(rows_of(settings, job_id).values())
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 404


def test_a_queued_job_is_not_deleted_until_it_has_stopped(client, auth) -> None:
    job = client.post("/v1/jobs", headers=auth, json=body(dataset(client, auth)["id"])).json()
    refused = client.delete(f"/v1/jobs/{job['id']}", headers=auth)
    assert refused.status_code == 409 and "cancel it" in refused.json()["error"]["message"], refused.text
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status"] == "queued"
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()["status"] == "cancelled"
    assert client.delete(f"/v1/jobs/{job['id']}", headers=auth).status_code == 204
    assert all(j["id"] != job["id"] for j in client.get("/v1/jobs", headers=auth).json()["items"])


def test_deleting_one_version_keeps_the_others(client, auth, settings) -> None:
    name, _ = trained_model(settings, client, auth, "vectors", name=f"two-{uuid.uuid4().hex[:8]}")
    (first,) = listed_versions(client, auth)
    again = client.post("/v1/models", headers=auth, json={"job_id": first["job_id"], "name": name})
    assert again.status_code == 201 and again.json()["version"] == 2
    refused = client.delete(f"/v1/models/{name}?version=1", headers=auth)  # the deployed one
    assert refused.status_code == 409, refused.text
    assert client.delete(f"/v1/models/{name}?version=2", headers=auth).json()["versions"] == [2]
    assert [v["version"] for v in listed_versions(client, auth)] == [1]
    with transaction(settings) as session:
        assert session.get(Job, first["job_id"]) is not None
