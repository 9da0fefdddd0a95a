"""GET /v1/models/{name}/weights: a version's weights, enough to embed with offline as the service does."""

from __future__ import annotations

import uuid

import numpy as np

from core.inference import Embedder
from core.store.storage import Storage
from tests.api.test_embeddings import listed_versions, trained_model


def test_downloaded_weights_embed_as_the_deployed_model_does(client, auth, settings, keys, tmp_path) -> None:
    name, _ = trained_model(settings, client, auth, "text", name=f"w-{uuid.uuid4().hex[:8]}")
    texts = ["a first text", "and a second"]
    served = client.post(
        "/v1/embeddings", headers=auth, json={"model": name, "input": texts, "encoding_format": "float"}
    )
    assert served.status_code == 200, served.text

    response = client.get(f"/v1/models/{name}/weights", headers=auth)
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    assert f'filename="{name}-v1.safetensors"' in response.headers["content-disposition"]
    (tmp_path / "model.safetensors").write_bytes(response.content)
    offline = Embedder(tmp_path).embed(texts).numpy()  # the file alone, as a user's own process loads it
    assert np.allclose(offline, [item["embedding"] for item in served.json()["data"]], atol=1e-5)

    assert client.get(f"/v1/models/{name}/weights?version=2", headers=auth).status_code == 404
    other = {"Authorization": f"Bearer {keys.make(f'other-{uuid.uuid4().hex[:6]}')}"}
    assert client.get(f"/v1/models/{name}/weights", headers=other).status_code == 404
    (version,) = listed_versions(client, auth)
    for checkpoint in Storage(settings.storage_root).checkpoint_dir(version["job_id"]).iterdir():
        (checkpoint / "model.safetensors").unlink()
    missing = client.get(f"/v1/models/{name}/weights", headers=auth)
    assert missing.status_code == 409 and "missing from storage" in missing.json()["error"]["message"]
