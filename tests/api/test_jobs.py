"""Job submission rules, validation errors that name the field, idempotency, auth, tenancy, rate limits."""

from __future__ import annotations

import uuid

import pytest

from core.store.db import transaction
from core.store.jobs import record_progress
from core.store.keys import revoke_key
from core.store.tables import Checkpoint, Job, utcnow


def dataset(client, auth, rows: int = 40) -> dict:
    content = b"a,b,label\n" + b"".join(f"{i},{i % 7},{i % 2}\n".encode() for i in range(rows))
    response = client.post(
        "/v1/datasets", headers=auth, data={"modality": "vectors"}, files={"file": ("v.csv", content)}
    )
    assert response.status_code == 201, response.text
    return response.json()


def body(dataset_id: str, **sections) -> dict:
    config = {"data": {"modality": "vectors", "val_fraction": 0.0}, "train": {"batch_size": 8}}
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return {"dataset_id": dataset_id, "name": "j", "config": config}


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"loss": {"temperature": 0}}, "config.loss.temperature"),
        ({"loss": {"temperature": -1}}, "config.loss.temperature"),
        ({"train": {"batch_size": 1}}, "config.train.batch_size"),
        ({"train": {"epochs": 0}}, "config.train.epochs"),
        ({"optim": {"lr": 0}}, "config.optim.lr"),
        ({"optim": {"name": "adam"}}, "config.optim.name"),
        ({"loss": {"variant": "supcon"}}, "config.loss.variant"),
        ({"train": {"typo_field": 1}}, "config.train.typo_field"),
        ({"train": {"path": 1}}, "config.train.path"),  # before: "config.train", a field named as a location dropped
        ({"model": {"hidden_dim": 1}}, "config.model.hidden_dim"),  # before: config.model.mlp.hidden_dim
        ({"augment": {"typo": 1}}, "config.augment.typo"),
        ({"loss": {"tau_plus": 1.0}}, "config.loss.tau_plus"),
        ({"loss": {"tau_plus": 0.1}}, "config.loss"),  # before: accepted, and NT-Xent ran without it
        ({"model": {"kind": "resnet"}}, "config"),
        ({"train": {"batch_size": 17, "num_devices": 2}}, "config"),  # before: accepted, then failed in the worker
    ],
)
def test_config_errors_are_422_naming_the_field(client, auth, sections, field) -> None:
    response = client.post("/v1/jobs", headers=auth, json=body(dataset(client, auth)["id"], **sections))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == field or any(d["field"] == field for d in error["details"]), error


def test_an_unknown_modality_gets_one_error_naming_it(client, auth) -> None:
    config = {"data": {"modality": "audio"}, "train": {"epochs": 1}}
    response = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset(client, auth)["id"], "config": config})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert len(error["details"]) == 1 and error["message"].startswith("config: data.modality must be one of")
    assert "not 'audio'" in error["message"]


@pytest.mark.parametrize("config", [None, {}, {"data": {"val_fraction": 0.2}}, {"data": {"modality": None}}, {"data": None},
                                    {"model": {"hidden_dim": 64}, "train": {"batch_size": 8, "epochs": 1}}])  # fmt: skip
def test_a_config_without_a_modality_takes_the_datasets(client, auth, config) -> None:  # noqa: ANN001
    """The dataset says its modality: a body that leaves it out (or the whole config) trains on the dataset's, with
    that modality's sections (before: 422, 'data.modality must be one of ...; none was given')."""
    payload = {"dataset_id": dataset(client, auth, rows=400)["id"], **({} if config is None else {"config": config})}
    response = client.post("/v1/jobs", headers=auth, json=payload)
    assert response.status_code == 202, response.text
    stored = response.json()["config"]
    assert stored["data"]["modality"] == "vectors" and stored["model"]["kind"] == "mlp"
    assert stored["augment"]["kind"] == "vectors"
    given = config or {}
    assert stored["data"]["val_fraction"] == (given.get("data") or {}).get("val_fraction", 0.1)
    assert stored["model"]["hidden_dim"] == given.get("model", {}).get("hidden_dim", 256)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"train": {"batch_size": 1}}, "config.train.batch_size"),
        ({"model": {"hidden_dim": 1}}, "config.model.hidden_dim"),
        ({"model": {"kind": "resnet"}}, "config"),
        ({"data": {"use_labels": True, "typo": 1}}, "config.data.typo"),
        ({"data": {"use_labels": True}, "train": {"batch_size": 8}}, "config.data.use_labels"),
    ],
)
def test_a_config_without_a_modality_is_checked_against_the_datasets(client, auth, config, field) -> None:
    """Its fields are validated once the dataset's modality is in, and answer as any other config's do."""
    content = b"a,b\n" + b"".join(f"{i},{i % 7}\n".encode() for i in range(40))  # no labels
    unlabelled = client.post("/v1/datasets", headers=auth, data={"modality": "vectors"},
                             files={"file": ("v.csv", content)}).json()  # fmt: skip
    response = client.post("/v1/jobs", headers=auth, json={"dataset_id": unlabelled["id"], "config": config})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == field, error
    assert client.post("/v1/jobs", headers=auth, json={"dataset_id": "nope", "config": config}).status_code == 404


def test_a_replay_without_a_modality_matches_the_job_it_made(client, auth) -> None:
    """An Idempotency-Key replayed with the same body that left the modality out returns the first job; the same
    body naming the dataset's modality is the same request, another modality is not."""
    data = dataset(client, auth)["id"]
    headers = {**auth, "Idempotency-Key": f"bare-{uuid.uuid4().hex[:8]}"}
    payload = {"dataset_id": data, "config": {"train": {"batch_size": 8}}}
    first = client.post("/v1/jobs", headers=headers, json=payload)
    again = client.post("/v1/jobs", headers=headers, json=payload)
    assert first.status_code == again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    named = {"dataset_id": data, "config": {"data": {"modality": "vectors"}, "train": {"batch_size": 8}}}
    assert client.post("/v1/jobs", headers=headers, json=named).json()["id"] == first.json()["id"]
    other = {"dataset_id": data, "config": {"data": {"modality": "text"}, "train": {"batch_size": 8}}}
    reused = client.post("/v1/jobs", headers=headers, json=other)
    assert reused.status_code == 422 and reused.json()["error"]["param"] == "Idempotency-Key", reused.text


def test_the_job_body_is_documented_with_the_run_config(client) -> None:
    """The body's config is documented as the run config, not also as a free-form object, and may be left out."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    config = schemas["JobCreate"]["properties"]["config"]
    assert config["$ref"].endswith("/RunConfig") and "anyOf" not in config, config
    assert schemas["JobCreate"]["required"] == ["dataset_id"]


def test_data_that_cannot_fill_a_batch_or_fit_the_config_is_refused(client, auth) -> None:
    small = dataset(client, auth, rows=10)["id"]
    response = client.post("/v1/jobs", headers=auth, json=body(small, train={"batch_size": 16}))
    assert response.status_code == 422 and response.json()["error"]["param"] == "config.train.batch_size"
    assert response.json()["error"]["message"].startswith("the training split has 10 records, fewer than one batch")
    halved = body(dataset(client, auth, rows=2)["id"], data={"val_fraction": 0.5}, train={"batch_size": 2})
    response = client.post("/v1/jobs", headers=auth, json=halved)
    assert response.json()["error"]["message"].startswith(
        "the training split has 1 record, fewer than one batch of train.batch_size=2;"
    )
    response = client.post("/v1/jobs", headers=auth, json=body(small, data={"modality": "text"}))
    assert response.status_code == 422 and response.json()["error"]["param"] == "config.data.modality"
    response = client.post("/v1/jobs", headers=auth, json=body("nope"))
    assert response.status_code == 404 and response.json()["error"]["param"] == "dataset_id"


def test_same_idempotency_key_creates_one_job(client, auth) -> None:
    payload = body(dataset(client, auth)["id"])
    headers = {**auth, "Idempotency-Key": "submit-1"}
    first = client.post("/v1/jobs", headers=headers, json=payload)
    second = client.post("/v1/jobs", headers=headers, json=payload)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"] and second.headers["Idempotent-Replayed"] == "true"
    assert client.get("/v1/jobs", headers=auth).json()["total"] == 1
    changed = {**payload, "config": {**payload["config"], "train": {**payload["config"]["train"], "epochs": 7}}}
    reused = client.post("/v1/jobs", headers=headers, json=changed)  # the key reused for another job
    assert reused.status_code == 422 and reused.json()["error"]["param"] == "Idempotency-Key", reused.text
    assert first.json()["id"] in reused.json()["error"]["message"]
    assert client.get("/v1/jobs", headers=auth).json()["total"] == 1


def test_status_filter_pagination_and_cancel_of_a_queued_job(client, auth) -> None:
    data = dataset(client, auth)["id"]
    ids = [client.post("/v1/jobs", headers=auth, json=body(data)).json()["id"] for _ in range(3)]
    page = client.get("/v1/jobs?limit=2&offset=0", headers=auth).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    cancelled = client.post(f"/v1/jobs/{ids[0]}/cancel", headers=auth).json()
    assert cancelled["status"] == "cancelled"
    assert [j["id"] for j in client.get("/v1/jobs?status=cancelled", headers=auth).json()["items"]] == [ids[0]]
    assert client.get("/v1/jobs?status=bogus", headers=auth).status_code == 422
    events = client.get(f"/v1/jobs/{ids[0]}/events", headers=auth).json()
    assert [e["kind"] for e in events] == ["queued", "cancelled"]


@pytest.mark.parametrize("ended", ["succeeded", "failed"])
def test_a_job_that_has_ended_is_not_cancelled(client, auth, settings, ended) -> None:
    """Before, cancelling a job that had succeeded answered 202 with ``cancel_requested`` false and nothing done, as
    if the cancel had been taken. A cancelled job is still returned as it is (a cancel sent twice)."""
    job_id = client.post("/v1/jobs", headers=auth, json=body(dataset(client, auth)["id"])).json()["id"]
    with transaction(settings) as session:
        session.get(Job, job_id).status = ended
    refused = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["message"] == f"job {job_id} has already {ended}; there is nothing to cancel"
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["cancel_requested"] is False
    assert [e["kind"] for e in client.get(f"/v1/jobs/{job_id}/events", headers=auth).json()] == ["queued"]


def test_a_cancelled_or_failed_job_is_queued_again_by_a_resume(client, auth, keys, settings) -> None:
    """POST /v1/jobs/{id}/resume: a cancelled or failed job is queued and sent again with its attempts anew, saying
    where it goes on from; a queued one is returned as it is; one that succeeded, one stopping after a cancel and one
    whose dataset is gone are refused; another owner's answers 404."""
    data = dataset(client, auth)["id"]
    job_id = client.post("/v1/jobs", headers=auth, json=body(data)).json()["id"]

    def resume(key: dict = auth):  # noqa: ANN202
        return client.post(f"/v1/jobs/{job_id}/resume", headers=key)

    def messages() -> list[tuple[str, str]]:
        return [(e["kind"], e["message"]) for e in client.get(f"/v1/jobs/{job_id}/events", headers=auth).json()]

    def set_row(**values) -> None:
        with transaction(settings) as session:
            row = session.get(Job, job_id)
            for name, value in values.items():
                setattr(row, name, value)

    assert resume().status_code == 202 and resume().json()["status"] == "queued"  # queued: as it is
    assert len(messages()) == 1
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).json()["status"] == "cancelled"
    resumed = resume()
    assert resumed.status_code == 202, resumed.text
    job = resumed.json()
    assert (job["status"], job["cancel_requested"], job["error"], job["finished_at"]) == ("queued", False, None, None)
    assert messages()[-1] == ("resume_requested", "resumed by its owner after it was cancelled: it starts over (no "
                              "checkpoint)")  # fmt: skip
    with transaction(settings) as session:
        assert session.get(Job, job_id).dispatched_at is not None  # sent to its queue
        for step in (10, 30):
            session.add(Checkpoint(job_id=job_id, step=step, epoch=0, storage_key=f"checkpoints/{job_id}/{step}"))
    set_row(status="failed", attempts=3, error="worker lost", finished_at=utcnow(), dispatched_at=None)
    job = resume().json()
    assert (job["status"], job["attempts"], job["error"]) == ("queued", 0, None)
    assert messages()[-1] == ("resume_requested", "resumed by its owner after it failed: it goes on from its "
                              "checkpoint at step 30")  # fmt: skip

    assert resume({"Authorization": f"Bearer {keys.make('someone-else')}"}).status_code == 404
    assert client.post("/v1/jobs/nope/resume", headers=auth).status_code == 404
    set_row(status="running", cancel_requested=True)
    stopping = resume()
    assert stopping.status_code == 409, stopping.text
    assert (
        stopping.json()["error"]["message"]
        == f"job {job_id} is stopping after a cancel; resume it once it is cancelled"
    )
    set_row(status="succeeded", cancel_requested=False)
    done = resume()
    assert done.status_code == 409 and "has succeeded; there is nothing left to train" in done.text, done.text
    set_row(status="cancelled")
    assert client.delete(f"/v1/datasets/{data}", headers=auth).status_code == 204
    gone = resume()
    assert gone.status_code == 409, gone.text
    assert (
        gone.json()["error"]["message"] == f"job {job_id}'s dataset was deleted; upload it again and submit a new job"
    )
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "cancelled"


def upload_file(client, auth, modality: str, name: str, content: bytes) -> str:
    response = client.post("/v1/datasets", headers=auth, data={"modality": modality}, files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_held_out_dataset_is_evaluated_on_and_the_training_dataset_trained_on_whole(client, auth, keys, settings):
    """``data.val_dataset_id``: the worker reads every record of the named dataset as the held-out ones and trains
    on every record of the job's (``val_fraction`` 0, and one above 0 refused beside it); a dataset that could not
    stand in for held-out records is refused naming the field; while a job may still read it, it cannot be deleted,
    and a job whose held-out dataset is gone is not resumed."""
    from core.store.storage import Storage
    from core.train.loop import TrainingError
    from worker.pipeline import load_input

    train_id, held_id = dataset(client, auth, rows=40)["id"], dataset(client, auth, rows=13)["id"]
    config = {"data": {"modality": "vectors", "val_dataset_id": held_id}, "train": {"batch_size": 8}}
    response = client.post("/v1/jobs", headers=auth, json={"dataset_id": train_id, "config": config})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["config"]["data"]["val_fraction"] == 0.0 and job["config"]["data"]["val_dataset_id"] == held_id
    job_input = load_input(settings, Storage(settings.storage_root), job["id"])
    assert (len(job_input.train), len(job_input.val)) == (40, 13)
    patient = {**config, "train": {"batch_size": 8, "early_stop_patience": 2}}  # it has evaluations to count
    assert client.post("/v1/jobs", headers=auth, json={"dataset_id": train_id, "config": patient}).status_code == 202

    def refused(data: dict, status: int, field: str = "config.data.val_dataset_id", dataset_id: str = train_id) -> str:
        answer = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "config": {
            "data": data, "train": {"batch_size": 8}}})  # fmt: skip
        assert answer.status_code == status and answer.json()["error"]["param"] == field, answer.text
        return answer.json()["error"]["message"]

    both = refused({"modality": "vectors", "val_dataset_id": held_id, "val_fraction": 0.2}, 422, "config.data")
    assert "data.val_fraction holds records out of the training dataset and data.val_dataset_id" in both
    assert refused({"modality": "vectors", "val_dataset_id": "nope"}, 404) == "dataset nope not found"
    theirs = dataset(client, {"Authorization": f"Bearer {keys.make('someone-else')}"})["id"]
    assert refused({"modality": "vectors", "val_dataset_id": theirs}, 404) == f"dataset {theirs} not found"
    texts = upload_file(client, auth, "text", "t.txt", b"".join(b"text number %d\n" % i for i in range(10)))
    assert refused({"modality": "vectors", "val_dataset_id": texts}, 422) == (
        "the held-out dataset holds text; the training dataset vectors")  # fmt: skip
    wider = upload_file(client, auth, "vectors", "w.csv", b"a,b,c\n" + b"1,2,3\n" * 5)
    assert refused({"modality": "vectors", "val_dataset_id": wider}, 422) == (
        "the held-out dataset's records have 3 features; the training dataset's 2")  # fmt: skip
    one = upload_file(client, auth, "vectors", "o.csv", b"a,b\n1,2\n")
    assert refused({"modality": "vectors", "val_dataset_id": one}, 422) == (
        "the held-out dataset has 1 record(s); an evaluation needs at least 2")  # fmt: skip
    pairs = upload_file(client, auth, "text", "p.jsonl", b"".join(b'{"anchor": "q%d", "positive": "a%d"}\n' % (i, i)
                                                                   for i in range(8)))  # fmt: skip
    assert refused({"modality": "text", "val_dataset_id": pairs}, 422, dataset_id=texts) == (
        "the held-out dataset holds anchor/positive pairs and the training dataset does not")  # fmt: skip

    busy = client.delete(f"/v1/datasets/{held_id}", headers=auth)
    assert busy.status_code == 409 and "used by 2 queued or running job(s)" in busy.text, busy.text
    for row in client.get("/v1/jobs?status=queued", headers=auth).json()["items"]:
        assert client.post(f"/v1/jobs/{row['id']}/cancel", headers=auth).status_code == 202
    assert client.delete(f"/v1/datasets/{held_id}", headers=auth).status_code == 204
    gone = client.post(f"/v1/jobs/{job['id']}/resume", headers=auth)
    assert gone.status_code == 409, gone.text
    assert gone.json()["error"]["message"] == (f"job {job['id']}'s held-out dataset {held_id} (data.val_dataset_id) "
                                               "was deleted; submit a new job")  # fmt: skip
    with transaction(settings) as session:
        session.get(Job, job["id"]).status = "queued"  # as if still queued: the worker says what is missing
    with pytest.raises(TrainingError, match=rf"the held-out dataset {held_id} \(data.val_dataset_id\) was deleted"):
        load_input(settings, Storage(settings.storage_root), job["id"])


def thinned_by_rule(points: list, max_points: int) -> list:
    """Every k-th of ``points`` from the first, and the last, for the least k whose points number at most
    ``max_points``."""
    for k in range(1, len(points) + 1):
        kept = points[::k] + ([] if (len(points) - 1) % k == 0 else points[-1:])
        if len(kept) <= max_points:
            return kept
    raise AssertionError("unreachable for max_points >= 2")


@pytest.mark.parametrize("max_points", [2, 3, 50, 999, 1000, 5000])
def test_metric_series_thin_to_max_points_of_recorded_values(client, auth, settings, max_points) -> None:
    """A chart needs a few hundred points of a series that a long run records a point a step of: ``max_points``
    keeps every k-th recorded point and the last, at most ``max_points``; without it, every point."""
    job = client.post("/v1/jobs", headers=auth, json=body(dataset(client, auth)["id"])).json()
    points = [("loss", step, step // 100, 1.0 / step) for step in range(1, 1001)]
    points += [("knn_top1", step, step // 100 - 1, step / 1000) for step in (100, 200, 300)]  # per epoch
    with transaction(settings) as session:
        job_row = session.get(Job, job["id"])
        record_progress(session, job_row.id, job_row.worker, {}, points)
    full = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth).json()["series"]
    assert [p["step"] for p in full["loss"]] == list(range(1, 1001))
    thinned = client.get(f"/v1/jobs/{job['id']}/metrics?max_points={max_points}", headers=auth)
    assert thinned.status_code == 200, thinned.text
    series = thinned.json()["series"]
    assert series["loss"] == thinned_by_rule(full["loss"], max_points)
    assert series["knn_top1"] == thinned_by_rule(full["knn_top1"], max_points)
    assert series["loss"][0]["step"] == 1 and series["loss"][-1]["step"] == 1000 and len(series["loss"]) <= max_points


def test_max_points_below_two_is_refused(client, auth) -> None:
    job = client.post("/v1/jobs", headers=auth, json=body(dataset(client, auth)["id"])).json()
    answer = client.get(f"/v1/jobs/{job['id']}/metrics?max_points=1", headers=auth)
    assert answer.status_code == 422 and answer.json()["error"]["param"] == "max_points"


def test_the_status_poll_answers_as_the_fastapi_routes_do(client, auth) -> None:
    """The poll is a plain route (api.plain_route): its body, errors and OpenAPI entry match FastAPI's routes'."""
    job = client.post("/v1/jobs", headers=auth, json=body(dataset(client, auth)["id"])).json()
    poll = client.get(f"/v1/jobs/{job['id']}", headers=auth)
    assert poll.status_code == 200 and poll.headers["content-type"] == "application/json"
    assert poll.json() == client.get("/v1/jobs", headers=auth).json()["items"][0] == job  # one JobRead, three routes
    missing, listed_missing = (
        client.get("/v1/jobs/nope", headers=auth),
        client.get("/v1/jobs/nope/events", headers=auth),
    )
    assert missing.status_code == listed_missing.status_code == 404
    assert missing.json()["error"].keys() == listed_missing.json()["error"].keys()
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer et_nope_nope"}):
        refused = client.get(f"/v1/jobs/{job['id']}", headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", refused.text
    operation = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}"]["get"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert [(p["name"], p["in"], p["required"]) for p in operation["parameters"]] == [("job_id", "path", True)]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("JobRead")


def test_keys_are_required_and_revocable(client, keys, settings) -> None:
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer et_000000000000_nope"}).status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": "Basic abc"}).status_code == 401
    key = keys.make("temp")
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with transaction(settings) as session:
        assert revoke_key(session, key.split("_")[1])
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert client.get("/healthz").status_code == 200


def test_keys_are_listed_to_their_owner_never_the_keys_themselves(client, keys) -> None:
    owner, other = f"lister-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    first, second, others = keys.make(owner), keys.make(owner), keys.make(other)
    admin = keys.make(f"root-{uuid.uuid4().hex[:6]}", admin=True)
    bearer = {"Authorization": f"Bearer {first}"}
    mine = client.get("/v1/keys", headers=bearer)
    assert mine.status_code == 200 and first not in mine.text and second not in mine.text
    assert {k["prefix"] for k in mine.json()} == {first.split("_")[1], second.split("_")[1]}
    assert client.delete(f"/v1/keys/{second.split('_')[1]}", headers=bearer).status_code == 200  # by its prefix
    listed = {k["prefix"]: k for k in client.get("/v1/keys", headers=bearer).json()}
    assert listed[second.split("_")[1]]["revoked_at"] and not listed[first.split("_")[1]]["revoked_at"]
    everyone = {k["prefix"] for k in client.get("/v1/keys", headers={"Authorization": f"Bearer {admin}"}).json()}
    assert {first.split("_")[1], others.split("_")[1]} <= everyone


def test_other_tenants_jobs_answer_404(client, auth, keys) -> None:
    job = client.post("/v1/jobs", headers=auth, json=body(dataset(client, auth)["id"])).json()
    other = {"Authorization": f"Bearer {keys.make('intruder')}"}
    for path in ("", "/metrics", "/checkpoints", "/events"):
        assert client.get(f"/v1/jobs/{job['id']}{path}", headers=other).status_code == 404
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=other).status_code == 404
    assert client.get("/v1/jobs", headers=other).json()["total"] == 0


def test_submissions_are_rate_limited_per_key(tmp_path, pg_url, redis_url, keys) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.conftest import make_settings

    limited = make_settings(tmp_path, pg_url, redis_url, rate_jobs_per_min=2)
    auth = {"Authorization": f"Bearer {keys.make('busy')}"}
    with TestClient(create_app(limited)) as client:
        data = dataset(client, auth)["id"]
        codes = [client.post("/v1/jobs", headers=auth, json=body(data)).status_code for _ in range(3)]
        assert codes == [202, 202, 429]
        last = client.post("/v1/jobs", headers=auth, json=body(data))
        assert last.status_code == 429 and int(last.headers["Retry-After"]) >= 1


def test_oversized_json_bodies_are_refused(client, auth) -> None:
    response = client.post("/v1/jobs", headers={**auth, "Content-Type": "application/json"},
                           content=b'{"x": "' + b"a" * (17 << 20) + b'"}')  # fmt: skip
    assert response.status_code == 413


def test_bodies_without_content_length_are_held_to_the_limit(tmp_path, pg_url, redis_url, keys) -> None:
    """A chunked request body has no Content-Length to refuse it by: it is counted as it arrives."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.conftest import make_settings

    small = make_settings(tmp_path, pg_url, redis_url, max_body_bytes=4096)
    headers = {"Authorization": f"Bearer {keys.make('chunked')}", "Content-Type": "application/json"}

    def body(kib: int):
        yield b'{"input": "'
        for _ in range(kib):
            yield b"a" * 1024
        yield b'"}'

    with TestClient(create_app(small)) as client:
        for path in ("/v1/jobs", "/v1/embeddings"):
            response = client.post(path, headers=headers, content=body(10))
            assert response.request.headers["transfer-encoding"] == "chunked"
            assert response.status_code == 413, (path, response.text)
            assert response.json()["error"]["type"] == "request_too_large" and "x-request-id" in response.headers
            # under the limit, the same kind of body reaches the route (and is judged on its content)
            assert client.post(path, headers=headers, content=body(2)).status_code == 422


def test_a_revoked_key_stops_working_within_the_auth_cache_time(tmp_path, pg_url, redis_url, keys) -> None:
    import time

    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.conftest import make_settings

    cached = make_settings(tmp_path, pg_url, redis_url, auth_cache_s=1.0)
    key = keys.make("cached")
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(cached)) as client:
        assert client.get("/v1/jobs", headers=headers).status_code == 200
        with transaction(cached) as session:
            revoke_key(session, key.split("_")[1])
        time.sleep(1.2)
        assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_every_request_gives_its_database_connection_back(tmp_path, pg_url, redis_url, keys) -> None:
    """One pooled connection, no overflow: a request that kept its session's connection would make the next wait
    for it and fail. Reads that end inside their transaction, answers raised mid-transaction and commits alike."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.store.db import get_engine
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, pg_url, redis_url, db_pool_size=1, db_max_overflow=0, db_timeout_s=2.0)
    auth = {"Authorization": f"Bearer {keys.make('one-connection')}"}
    with TestClient(create_app(settings)) as client:
        job = client.post("/v1/jobs", headers=auth, json=body(dataset(client, auth)["id"])).json()
        answers = []
        for _ in range(3):
            answers.append(client.get("/v1/jobs", headers=auth).status_code)  # read, left in its transaction
            answers.append(client.get("/v1/jobs/nope/metrics", headers=auth).status_code)  # 404 raised mid-read
            answers.append(client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).status_code)  # commits
        assert answers == [200, 404, 202] * 3
        assert get_engine(settings).pool.checkedout() == 0


def test_unknown_routes_methods_and_broken_json_answer_in_the_error_shape(client, auth) -> None:
    """Starlette's own 404 and 405 and FastAPI's JSON decode errors come in the same ``error`` object as every
    other error (before, ``{"detail": ...}`` and a field named ``0``)."""
    missing = client.get("/v1/no-such-route", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found", missing.text
    wrong_method = client.put("/v1/keys", headers=auth)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == 405, wrong_method.text
    assert "POST" in wrong_method.headers["allow"]
    for path in ("/v1/jobs", "/v1/models/some-model/deploy"):
        broken = client.post(path, headers={**auth, "Content-Type": "application/json"}, content=b'{"name": "x"')
        error = broken.json()["error"]
        assert broken.status_code == 422 and error["param"] is None, broken.text
        assert error["message"].startswith("Invalid JSON: ") and "at character 12" in error["message"], error


def test_a_query_parameter_a_route_does_not_read_is_refused_naming_what_it_reads(client, auth, settings) -> None:
    """Before, an unknown query parameter was ignored: a misspelt ``version`` deleted every version of a model, a
    misnamed filter listed every job. The status poll and /v1/embeddings (whose OpenAI clients may add their own)
    still take any."""
    from tests.api.test_embeddings import trained_model

    name, _ = trained_model(settings, client, auth, "vectors")
    embedded = client.post("/v1/embeddings?api-version=2024-02-01", headers=auth,
                           json={"model": name, "input": [[0.1] * 6]})  # fmt: skip
    assert embedded.status_code == 200, embedded.text
    assert client.post(f"/v1/models/{name}/undeploy", headers=auth).status_code == 200
    refused = client.delete(f"/v1/models/{name}?versoin=1", headers=auth)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["param"] == "versoin" and "DELETE /v1/models/{name} takes: version" in error["message"], error
    assert [v["version"] for v in client.get(f"/v1/models/{name}", headers=auth).json()["versions"]] == [1]
    listing = client.get("/v1/jobs?state=running", headers=auth)
    assert listing.status_code == 422 and "takes: limit, offset, status" in listing.json()["error"]["message"]
    assert client.get("/v1/jobs?status=running&limit=5", headers=auth).status_code == 200
    job = client.post("/v1/jobs", headers=auth, json=body(dataset(client, auth)["id"])).json()
    picture = client.get(f"/v1/jobs/{job['id']}/projection?checkpoint=abc", headers=auth)
    assert picture.status_code == 422 and picture.json()["error"]["param"] == "checkpoint"
    assert client.get(f"/v1/jobs/{job['id']}/events?x=1", headers=auth).json()["error"]["message"].endswith(
        "takes: none"
    )  # fmt: skip
    assert client.get(f"/v1/jobs/{job['id']}?x=1", headers=auth).status_code == 200


def test_a_transaction_the_database_rolled_back_for_another_answers_409_not_503(client, auth) -> None:
    from psycopg.errors import DeadlockDetected
    from sqlalchemy.exc import OperationalError

    def deadlocked() -> None:
        raise OperationalError("UPDATE model_version ...", {}, DeadlockDetected("deadlock detected"))

    client.app.add_api_route("/test/deadlocked", deadlocked)
    answer = client.get("/test/deadlocked", headers=auth)
    assert answer.status_code == 409 and answer.headers["retry-after"] == "1", answer.text
    assert "conflicted with another" in answer.json()["error"]["message"]  # before: 503 "database is unavailable"


def test_a_checkpoints_picture_is_drawn_once_and_shown_again_from_memory(client, auth, settings) -> None:
    """Drawing the picture reads the whole dataset, loads the checkpoint and embeds the held-out records; a
    checkpoint and its dataset never change, so asking again (the dashboard going back to a checkpoint) answers the
    same points without doing it again. Another limit is another picture."""
    from api.jobs.service import _picture
    from tests.api.test_embeddings import listed_versions, trained_model

    trained_model(settings, client, auth, "vectors", name="picture-model")
    job_id = next(v["job_id"] for v in listed_versions(client, auth) if v["name"] == "picture-model")
    _picture.cache_clear()
    first = client.get(f"/v1/jobs/{job_id}/projection?limit=20", headers=auth)
    assert first.status_code == 200, first.text
    assert len(first.json()["points"]) == 20
    again = client.get(f"/v1/jobs/{job_id}/projection?limit=20", headers=auth)
    assert again.json() == first.json()
    assert (_picture.cache_info().hits, _picture.cache_info().misses) == (1, 1)
    other = client.get(f"/v1/jobs/{job_id}/projection?limit=10", headers=auth)
    assert len(other.json()["points"]) == 10 and _picture.cache_info().misses == 2


def test_a_held_out_share_too_small_to_evaluate_is_refused(client, auth) -> None:
    """A ``val_fraction`` that holds out fewer than two records made a job that never evaluated (no val_loss, k-NN,
    probe or best checkpoint) without a word; it is refused with the fraction that would do."""
    forty = dataset(client, auth, rows=40)["id"]
    response = client.post("/v1/jobs", headers=auth, json=body(forty, data={"val_fraction": 0.03}))
    assert response.status_code == 422 and response.json()["error"]["param"] == "config.data.val_fraction"
    message = response.json()["error"]["message"]
    assert (
        message.startswith("config.data.val_fraction 0.03 of 40 records holds out 1,") and "raise it to 0.04" in message
    )
    assert client.post("/v1/jobs", headers=auth, json=body(forty, data={"val_fraction": 0.04})).status_code == 202
    assert client.post("/v1/jobs", headers=auth, json=body(forty, data={"val_fraction": 0.0})).status_code == 202
    tiny = dataset(client, auth, rows=2)["id"]  # 2 held out would need 0.75 of 2 records, over the 0.5 allowed
    response = client.post(
        "/v1/jobs", headers=auth, json=body(tiny, data={"val_fraction": 0.2}, train={"batch_size": 2})
    )
    assert "upload more data, or set it to 0" in response.json()["error"]["message"], response.text


def test_supervised_training_on_labels_of_one_class_is_refused(client, auth) -> None:
    """With one class every pair is a positive and SupCon pulls everything together; before, the job was accepted."""
    content = b"a,b,label\n" + b"".join(f"{i},{i % 7},same\n".encode() for i in range(40))
    one = client.post("/v1/datasets", headers=auth, data={"modality": "vectors"}, files={"file": ("v.csv", content)})
    assert one.status_code == 201 and one.json()["num_labels"] == 1, one.text
    response = client.post("/v1/jobs", headers=auth, json=body(one.json()["id"], data={"use_labels": True}))
    assert response.status_code == 422 and response.json()["error"]["param"] == "config.data.use_labels"
    assert "all one class" in response.json()["error"]["message"]
    assert client.post("/v1/jobs", headers=auth, json=body(one.json()["id"])).status_code == 202  # self-supervised


def test_a_text_dataset_of_pairs_trains_on_its_pairs_unless_the_mode_is_given(client, auth) -> None:
    """Before, the default mode ('dropout') read the anchors alone: an upload of anchor/positive pairs trained as if
    its positives were not there, though the README calls them "given pairs with in-batch negatives"."""
    rows = b"".join(f'{{"anchor": "question {i}", "positive": "answer {i}"}}\n'.encode() for i in range(40))
    paired = client.post("/v1/datasets", headers=auth, data={"modality": "text"}, files={"file": ("p.jsonl", rows)})
    plain = client.post("/v1/datasets", headers=auth, data={"modality": "text"},
                        files={"file": ("t.txt", b"".join(f"text {i}\n".encode() for i in range(40)))})  # fmt: skip
    assert paired.status_code == plain.status_code == 201 and paired.json()["details"]["paired"]

    def submit(dataset_id: str, augment: dict | None = None, key: str | None = None):  # noqa: ANN202
        config = {"data": {"modality": "text", "val_fraction": 0.0}, "train": {"batch_size": 8}}
        headers = {**auth, **({"Idempotency-Key": key} if key else {})}
        payload = {"dataset_id": dataset_id, "config": {**config, **({"augment": augment} if augment else {})}}
        response = client.post("/v1/jobs", headers=headers, json=payload)
        assert response.status_code == 202, response.text
        return response.json()

    first = submit(paired.json()["id"], key="pairs-1")
    assert first["config"]["augment"] == {"kind": "text", "mode": "pairs"}
    assert submit(paired.json()["id"], key="pairs-1")["id"] == first["id"]  # the same request, replayed
    assert submit(paired.json()["id"], {"mode": "dropout"})["config"]["augment"]["mode"] == "dropout"  # given: kept
    assert submit(plain.json()["id"])["config"]["augment"]["mode"] == "dropout"


def test_a_key_that_is_not_an_admin_is_told_creating_keys_needs_one(client, keys) -> None:
    """Before, a 404 'not found' for a route the docs list: whoever scripted key creation with a tenant's key was
    left to guess. The route is no secret; its rule is said (403), and nothing is created."""
    tenant = {"Authorization": f"Bearer {keys.make(f'tenant-{uuid.uuid4().hex[:6]}')}"}
    auth = {"Authorization": f"Bearer {keys.make(f'root-{uuid.uuid4().hex[:6]}', admin=True)}"}
    owner = f"someone-else-{uuid.uuid4().hex[:6]}"
    refused = client.post("/v1/keys", headers=tenant, json={"owner": owner, "name": "x"})
    error = refused.json()["error"]
    assert refused.status_code == 403 and error["type"] == "permission_error", refused.text
    assert "admin key" in error["message"], error
    owners = {k["owner"] for k in client.get("/v1/keys", headers=auth).json()}  # the admin sees every owner's keys
    assert owner not in owners
    made = client.post("/v1/keys", headers=auth, json={"owner": owner, "name": "x"})  # an admin may
    assert made.status_code == 201 and made.json()["key"].startswith("et_"), made.text
