"""Model names are per owner: an admin's request by name reaches one owner's models, never two owners' at once."""

from __future__ import annotations

import uuid

from tests.api.test_embeddings import listed_versions, trained_model

VECTORS = [[0.1] * 6]


def deployed_ids(client, headers) -> set[str]:  # noqa: ANN001 - the test client and a key's headers
    return {m["id"] for m in listed_versions(client, headers) if m["deployed"]}


def test_an_admin_acting_on_a_name_two_owners_use_is_refused_and_touches_neither(client, auth, settings, keys) -> None:
    bob = f"bob-{uuid.uuid4().hex[:6]}"
    other = {"Authorization": f"Bearer {keys.make(bob)}"}
    admin = {"Authorization": f"Bearer {keys.make(f'root-{uuid.uuid4().hex[:6]}', admin=True)}"}
    name, _ = trained_model(settings, client, auth, "vectors", name=f"shared-{uuid.uuid4().hex[:8]}")
    trained_model(settings, client, other, "vectors", name=name)  # bob's model of the same name, deployed
    mine, bobs = deployed_ids(client, auth), deployed_ids(client, other)
    assert len(mine) == len(bobs) == 1

    for answer in (
        client.post(f"/v1/models/{name}/undeploy", headers=admin),
        client.post(f"/v1/models/{name}/deploy", headers=admin),
        client.post("/v1/embeddings", headers=admin, json={"model": name, "input": VECTORS}),
    ):
        assert answer.status_code == 409, answer.text
        assert "several owners" in answer.text and bob in answer.text, answer.text
    entries = [e for e in client.get("/v1/models", headers=admin).json()["data"] if e["id"] == name]
    assert len(entries) == 2 and bob in {e["owned_by"] for e in entries}  # the admin lists both, by owner
    assert client.get(f"/v1/models/{name}", headers=admin).status_code == 409
    (own,) = client.get("/v1/models", headers=other).json()["data"]
    assert own == client.get(f"/v1/models/{name}", headers=other).json() and own["owned_by"] == bob
    assert deployed_ids(client, auth) == mine and deployed_ids(client, other) == bobs  # neither owner's touched

    assert client.post(f"/v1/models/{name}/undeploy", headers=other).status_code == 200
    served = client.post("/v1/embeddings", headers=admin, json={"model": name, "input": VECTORS})
    assert served.status_code == 200, served.text  # one owner's deployment left: the admin's request reaches it


def test_an_admin_with_a_model_of_that_name_acts_on_their_own(client, auth, settings, keys) -> None:
    root = f"root-{uuid.uuid4().hex[:6]}"
    admin = {"Authorization": f"Bearer {keys.make(root, admin=True)}"}
    name, _ = trained_model(settings, client, auth, "vectors", name=f"shared-{uuid.uuid4().hex[:8]}")
    trained_model(settings, client, admin, "vectors", name=name)  # the admin's own model of the same name, deployed
    mine = deployed_ids(client, auth)
    named = {m["id"] for m in listed_versions(client, admin) if m["name"] == name}  # both owners'
    assert len(named) == 2

    undeployed = client.post(f"/v1/models/{name}/undeploy", headers=admin)
    assert undeployed.status_code == 200, undeployed.text
    assert len(undeployed.json()) == 1 and {m["id"] for m in undeployed.json()} < named  # the admin's own
    assert not {m["id"] for m in undeployed.json()} & mine
    assert deployed_ids(client, auth) == mine  # the other owner's deployment still serves
