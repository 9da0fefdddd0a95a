"""Writes that race on PostgreSQL: each interleaving is forced with a second transaction, so the test is exact."""

from __future__ import annotations

import threading
import uuid

from sqlalchemy import event

from api.datasets.service import owned_dataset
from api.models import service as models
from api.models.schemas import ModelCreate, ModelDeploy
from core.store.db import session_factory
from core.store.keys import Principal
from core.store.storage import Storage
from core.store.tables import Dataset, Job, ModelVersion
from tests.api.test_embeddings import trained_model

VECTORS = b"a,b\n" + b"1,2\n3,4\n" * 10
CONFIG = {"data": {"modality": "vectors", "val_fraction": 0.0}, "train": {"batch_size": 4}}


def upload(client, auth) -> str:
    answer = client.post("/v1/datasets", headers=auth, data={"modality": "vectors"}, files={"file": ("v.csv", VECTORS)})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def in_thread(call):  # noqa: ANN001, ANN201 - any callable; returns its thread and the box its result lands in
    box: list = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    return thread, box


def test_a_registration_that_loses_its_version_number_takes_the_next(client, auth, settings) -> None:
    name, _ = trained_model(settings, client, auth, "vectors", name=f"numbered-{uuid.uuid4().hex[:8]}")  # version 1
    make_session = session_factory(settings)
    with make_session() as session:
        first = session.query(ModelVersion).filter_by(name=name).one()  # names are unique to this test
        principal = Principal(owner=first.owner, is_admin=False, key_id="test")
    storage = Storage(settings.storage_root)
    body = ModelCreate(job_id=first.job_id, name=name)

    def register_beside(session_committing, _=None) -> None:  # noqa: ANN001 - the session event's argument
        with make_session() as other:  # commits version 2 after this registration read 1 as the newest
            assert models.register_model(other, storage, principal, body).version == 2

    with make_session() as session:
        event.listen(session, "before_commit", register_beside, once=True)
        registered = models.register_model(session, storage, principal, body)
    assert registered.version == 3
    with make_session() as session:
        versions = sorted(v.version for v in session.query(ModelVersion).filter_by(name=name))
    assert versions == [1, 2, 3]


def test_a_delete_waits_for_a_job_submitted_beside_it_and_refuses(client, auth, settings) -> None:
    dataset_id = upload(client, auth)
    with session_factory(settings)() as submission:  # a job's submission: it reads the dataset, then adds the job
        dataset = submission.get(Dataset, dataset_id)
        principal = Principal(owner=dataset.owner, is_admin=False, key_id="test")
        owned_dataset(submission, principal, dataset_id, lock="share")
        submission.add(Job(owner=dataset.owner, name="j", dataset_id=dataset_id, config=CONFIG, queue="cpu"))
        submission.flush()
        thread, answer = in_thread(lambda: client.delete(f"/v1/datasets/{dataset_id}", headers=auth))
        thread.join(timeout=1.0)
        assert thread.is_alive(), "the delete did not wait for the submission's transaction"
        submission.commit()
    thread.join(timeout=30)
    assert answer[0].status_code == 409, answer[0].text
    assert "cancel them first" in answer[0].json()["error"]["message"]
    assert client.get(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 200


def test_a_job_submitted_beside_a_delete_is_refused_as_not_found(client, auth, settings) -> None:
    dataset_id = upload(client, auth)
    with session_factory(settings)() as deletion:  # a dataset's delete, not yet committed
        dataset = deletion.get(Dataset, dataset_id)
        principal = Principal(owner=dataset.owner, is_admin=False, key_id="test")
        deletion.delete(owned_dataset(deletion, principal, dataset_id, lock="update"))
        deletion.flush()
        body = {"dataset_id": dataset_id, "config": CONFIG}
        thread, answer = in_thread(lambda: client.post("/v1/jobs", headers=auth, json=body))
        thread.join(timeout=1.0)
        assert thread.is_alive(), "the submission did not wait for the delete's transaction"
        deletion.commit()
    thread.join(timeout=30)
    assert answer[0].status_code == 404, answer[0].text
    assert answer[0].json()["error"]["param"] == "dataset_id"
    assert client.get("/v1/jobs", headers=auth).json()["total"] == 0


def test_two_deployments_of_one_name_beside_each_other_take_turns(client, auth, settings) -> None:
    name, _ = trained_model(settings, client, auth, "vectors", name=f"turns-{uuid.uuid4().hex[:8]}")  # v1, deployed
    job_id = client.get(f"/v1/models/{name}", headers=auth).json()["versions"][0]["job_id"]
    assert client.post("/v1/models", headers=auth, json={"job_id": job_id, "name": name}).status_code == 201  # v2
    make_session = session_factory(settings)
    with make_session() as session:
        owner = session.query(ModelVersion).filter_by(name=name).first().owner
    principal = Principal(owner=owner, is_admin=False, key_id="test")
    beside: list = []

    def deploy_v2_beside(_session, _=None) -> None:  # noqa: ANN001 - the session event's arguments
        def deploy_v2() -> str:
            with make_session() as other:
                return models.deploy(other, principal, name, ModelDeploy(version=2)).id

        beside.append(in_thread(deploy_v2))
        beside[0][0].join(timeout=1.0)  # it runs until it waits for a row this deployment holds

    with make_session() as session:  # deploys v1 again; v2's deployment starts as this one is about to commit
        event.listen(session, "before_commit", deploy_v2_beside, once=True)
        models.deploy(session, principal, name, ModelDeploy(version=1))
    thread, result = beside[0]
    thread.join(timeout=30)
    assert result, "the second deployment failed (before: PostgreSQL ended one of the two as a deadlock)"
    with make_session() as session:
        deployed = [v.version for v in session.query(ModelVersion).filter_by(name=name) if v.deployed]
    assert deployed == [2]  # the later one won, and one version is deployed
