"""/v1/embeddings: the official openai client unchanged, input checks, micro-batching of concurrent calls."""

from __future__ import annotations

import asyncio
import base64 as pybase64
import io
import threading
import time

import httpx
import numpy as np
import openai
import orjson
import pytest
import torch
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from api.embeddings.schemas import EmbeddingResponse
from core.config import RunConfig
from core.data import Records
from core.inference import Embedder
from core.store.db import transaction
from core.store.storage import Storage
from core.store.tables import Checkpoint, Dataset, Job
from core.train.loop import fit
from tests.conftest import free_port, make_settings


def trained_model(settings, client, auth, modality: str, name: str | None = None) -> tuple[str, Embedder]:
    """Train a tiny model in-process on an uploaded dataset, record it as a finished job's checkpoint, register and
    deploy it (as ``name``, by default ``{modality}-model``; the suite shares one database)."""
    storage = Storage(settings.storage_root)
    if modality == "text":
        records = Records("text", texts=[f"text number {i}" for i in range(16)])
        lines = [orjson.dumps({"text": t, "label": ("even", "odd")[i % 2]}) for i, t in enumerate(records.texts)]
        upload = ("t.jsonl", b"\n".join(lines) + b"\n")
        raw = {"data": {"modality": "text", "val_fraction": 0.0},
               "model": {"kind": "transformer", "backbone": "tiny-random-bert", "max_length": 16}}  # fmt: skip
    elif modality == "image":
        images = np.random.default_rng(0).integers(0, 256, size=(16, 1, 8, 8), dtype=np.uint8)
        records = Records("image", images=images)
        buffer = io.BytesIO()
        np.savez(buffer, images=images)
        upload = ("i.npz", buffer.getvalue())
        raw = {"data": {"modality": "image", "val_fraction": 0.0},
               "model": {"kind": "resnet", "width": 4, "blocks": [1], "image_size": 8}}  # fmt: skip
    else:
        records = Records("vectors", vectors=np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32))
        buffer = io.BytesIO()
        np.save(buffer, records.vectors)
        upload = ("v.npy", buffer.getvalue())
        raw = {"data": {"modality": "vectors", "val_fraction": 0.0}, "model": {"kind": "mlp", "output_dim": 12}}
    config = RunConfig.model_validate({**raw, "train": {"epochs": 1, "batch_size": 8}})
    dataset = client.post("/v1/datasets", headers=auth, data={"modality": modality}, files={"file": upload})
    assert dataset.status_code == 201, dataset.text
    with transaction(settings) as session:
        owner = session.get(Dataset, dataset.json()["id"]).owner
        job = Job(owner=owner, name="j", dataset_id=dataset.json()["id"], config=config.model_dump(mode="json"),
                  queue="cpu", status="succeeded")  # fmt: skip
        session.add(job)
        session.flush()
        job_id = job.id
    result = fit(config, records, None, checkpoint_dir=storage.checkpoint_dir(job_id))
    with transaction(settings) as session:
        session.add(
            Checkpoint(job_id=job_id, step=result.step, epoch=0, storage_key=storage.key_of(result.last_checkpoint))
        )
    name = name or f"{modality}-model"
    assert client.post("/v1/models", headers=auth, json={"job_id": job_id, "name": name}).status_code == 201
    assert client.post(f"/v1/models/{name}/deploy", headers=auth).status_code == 200
    return name, Embedder(result.last_checkpoint)


def listed_versions(client, headers) -> list[dict]:  # noqa: ANN001 - the test client and a key's headers
    """Every model version GET /v1/models lists for this key."""
    listed = client.get("/v1/models", headers=headers)
    assert listed.status_code == 200, listed.text
    return [version for entry in listed.json()["data"] for version in entry["versions"]]


class LiveServer:
    def __init__(self, app, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_openai_client_works_unchanged_against_a_text_model(client, auth, settings) -> None:
    name, embedder = trained_model(settings, client, auth, "text")
    with LiveServer(client.app) as base:
        oai = openai.OpenAI(base_url=f"{base}/v1", api_key=auth["Authorization"].removeprefix("Bearer "))
        result = oai.embeddings.create(model=name, input=["hello world", "another text"])  # base64 by default
        vectors = np.array([item.embedding for item in result.data])
        assert vectors.shape == (2, 32) and result.model == name and result.usage.total_tokens > 0
        assert np.allclose(vectors, embedder.embed(["hello world", "another text"]).numpy(), atol=1e-5)
        (served,) = client.app.state.model_cache.models.values()  # the vectors above came from its trace
        assert served.embedder.untraced_because is None and served.embedder.forward != served.embedder.model.embed
        small = oai.embeddings.create(model=name, input="one", dimensions=8, encoding_format="float")
        head = embedder.embed(["one"]).numpy()[0, :8]  # the first 8 of the full embedding, normalised again
        assert np.allclose(small.data[0].embedding, head / np.linalg.norm(head), atol=1e-5)
        with pytest.raises(openai.NotFoundError):
            oai.embeddings.create(model="no-such-model", input="x")
        (listed,) = oai.models.list()  # what OpenAI-compatible tools call to offer a model
        assert listed.id == name and listed.object == "model" and listed.owned_by and listed.created > 0
        retrieved = oai.models.retrieve(name)
        assert retrieved.id == name and retrieved.deployed_version == 1 and len(retrieved.versions) == 1
        with pytest.raises(openai.NotFoundError):
            oai.models.retrieve("no-such-model")
        with pytest.raises(openai.ConflictError, match="undeploy it first"):
            oai.models.delete(name)
        for tokens in ([15339, 1917], [[15339, 1917], [1023]]):  # OpenAI's token-id inputs, as LangChain sends them
            with pytest.raises(openai.UnprocessableEntityError, match="arrays of token ids are not accepted"):
                oai.embeddings.create(model=name, input=tokens)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="bad").embeddings.create(model=name, input="x")
        assert client.post(f"/v1/models/{name}/undeploy", headers=auth).status_code == 200
        gone = oai.models.delete(name)
        assert gone.id == name and gone.deleted and not list(oai.models.list())


def test_vector_inputs_are_checked(client, auth, settings) -> None:
    name, embedder = trained_model(settings, client, auth, "vectors")
    ok = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": [[0.1] * 6, [0.2] * 6]})
    assert ok.status_code == 200
    EmbeddingResponse.model_validate_json(ok.content)  # the documented shape, written without the model
    served = np.array([d["embedding"] for d in ok.json()["data"]], dtype=np.float32)
    assert np.allclose(served, embedder.embed(np.array([[0.1] * 6, [0.2] * 6])).numpy(), atol=1e-5)
    as_base64 = client.post("/v1/embeddings", headers=auth,
                         json={"model": name, "input": [[0.1] * 6, [0.2] * 6], "encoding_format": "base64"})  # fmt: skip
    decoded = [np.frombuffer(pybase64.b64decode(d["embedding"]), dtype="<f4") for d in as_base64.json()["data"]]
    assert np.array_equal(np.stack(decoded), served)  # the shortest float32 digits give back the very same floats
    cases = [
        ({"model": name, "input": [[0.1] * 5]}, "has 5 values"),
        ({"model": name, "input": [[0.1]]}, "input[0] has 1 value; the model takes 6"),
        ({"model": name, "input": "text"}, "vector model"),
        ({"model": name, "input": [1, 2, 3, 4, 5, 6]}, "list of numeric lists"),
        ({"model": name, "input": [[0.1] * 6], "dimensions": 99}, "at most 12"),
        ({"model": name, "input": [[0.1] * 6], "encoding_format": "hex"}, "encoding_format"),
        ({"model": name}, "input"),
        (
            {"model": name, "input": [[0.1] * 6, [1e39] + [0.1] * 5]},
            "input[1] holds NaN, infinite values or values beyond float32's range",
        ),  # before: a 200 whose embedding was nulls
        ({"model": name, "input": [[0.1] * 6], "dimensions": "many"}, "dimensions: Input should be a valid integer"),
    ]
    for payload, message in cases:
        response = client.post("/v1/embeddings", headers=auth, json=payload)
        assert response.status_code == 422, (payload, response.text)
        assert message in response.text, (payload, response.text)
    # booleans and numeric strings are not numbers: before, [true, ...] and ["0.5", ...] were embedded as 1.0 and 0.5
    for shapeless in (5, None, [[0.1] * 6, ["a"] * 6], [[0.1] * 6, None], {"text": "a"}, [[True] * 6], [["0.5"] * 6]):
        response = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": shapeless})
        error = response.json()["error"]  # one error saying what input takes, not one per member of its union
        assert response.status_code == 422 and len(error["details"]) == 1, (shapeless, response.text)
        assert error["param"] == "input" and error["message"].startswith("input: fits none of the shapes accepted. "
                                                                        "Text models: a string"), response.text  # fmt: skip


def test_a_large_image_embeds_as_its_shrunk_copy_and_a_wide_one_as_its_centre(client, auth, settings) -> None:
    """An image larger than the model's inputs (128x128 for 8x8) is shrunk to the average of the area each model
    pixel covers, as Pillow shrinks it, by /v1/embeddings and by Embedder alike. Before, bilinear sampling read 4 of
    those 16x16 pixels, so that a photo's sensor noise came out as coarse noise in what the model saw."""
    from PIL import Image

    name, embedder = trained_model(settings, client, auth, "image", name="image-large-inputs")
    rng = np.random.default_rng(1)
    blocks = np.kron(rng.integers(0, 256, size=(8, 8)), np.ones((16, 16)))
    large = np.clip(np.round(blocks + rng.normal(0, 60, size=blocks.shape)), 0, 255).astype(np.uint8)
    shrunk = np.asarray(Image.fromarray(large).resize((8, 8), Image.Resampling.BILINEAR))

    def png(pixels: np.ndarray) -> str:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return pybase64.b64encode(buffer.getvalue()).decode()

    response = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": [png(large), png(shrunk)]})
    assert response.status_code == 200, response.text
    served = np.array([item["embedding"] for item in response.json()["data"]])
    assert np.linalg.norm(served[0] - served[1]) < 0.01  # 0.0012; before, 0.065
    assert np.allclose(embedder.embed(large[None]).numpy()[0], served[0], atol=1e-4)

    # of another aspect than the training images' (8x8): its centre square, as the dataset would have held it;
    # before, stretched to the square whole
    wide = np.concatenate([rng.integers(0, 256, size=(8, 4)), shrunk, rng.integers(0, 256, size=(8, 4))], axis=1)
    response = client.post("/v1/embeddings", headers=auth,
                           json={"model": name, "input": [png(wide.astype(np.uint8)), png(shrunk)]})  # fmt: skip
    served = np.array([item["embedding"] for item in response.json()["data"]])
    assert np.allclose(served[0], served[1], atol=1e-5)
    assert np.allclose(embedder.embed(wide.astype(np.uint8)[None]).numpy()[0], served[0], atol=1e-5)


def test_concurrent_requests_share_forward_passes(tmp_path, pg_url, redis_url, keys) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    settings = make_settings(tmp_path, pg_url, redis_url, embed_batch_wait_ms=50.0, rate_embeddings_per_min=10_000)
    auth = {"Authorization": f"Bearer {keys.make('batcher')}"}
    app = create_app(settings)
    with TestClient(app) as client:
        name, embedder = trained_model(settings, client, auth, "vectors")

    rows = np.random.default_rng(1).normal(size=(24, 6)).round(4).tolist()

    async def run() -> list[list[float]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            responses = await asyncio.gather(
                *[http.post("/v1/embeddings", headers=auth, json={"model": name, "input": [row]}) for row in rows]
            )
        from core.store.db import get_engine

        assert all(r.status_code == 200 for r in responses), (
            get_engine(settings).pool.status(),
            [r.status_code for r in responses],
        )
        return [r.json()["data"][0]["embedding"] for r in responses]

    out = asyncio.run(run())
    batcher = next(iter(app.state.model_cache.models.values())).batcher  # wait 50 ms: concurrent calls meet
    assert max(batcher.batch_sizes) > 1 and sum(batcher.batch_sizes) == len(rows)
    assert torch.allclose(torch.tensor(out), embedder.embed(np.array(rows, dtype=np.float32)), atol=1e-5)


def test_a_bf16_server_answers_within_bf16_rounding_of_fp32(tmp_path, pg_url, redis_url, keys) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    settings = make_settings(tmp_path, pg_url, redis_url, embed_precision="bf16")
    auth = {"Authorization": f"Bearer {keys.make('bf16')}"}
    rows = np.random.default_rng(2).normal(size=(5, 6)).round(4)
    with TestClient(create_app(settings)) as client:
        name, fp32 = trained_model(settings, client, auth, "vectors")
        response = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": rows.tolist()})
        (served,) = client.app.state.model_cache.models.values()
    assert response.status_code == 200 and served.embedder.precision == "bf16"
    got = torch.tensor([item["embedding"] for item in response.json()["data"]])
    want = fp32.embed(rows.astype(np.float32))
    assert (got * want).sum(-1).min() > 0.999 and (got - want).abs().max() > 1e-4


def test_a_deployment_sets_its_own_precision_over_the_servers(client, auth, settings) -> None:
    name, fp32 = trained_model(settings, client, auth, "vectors")  # deployed with no precision: the server's fp32
    rows = np.random.default_rng(3).normal(size=(4, 6)).round(4)
    want = fp32.embed(rows.astype(np.float32))

    def embed() -> tuple[torch.Tensor, str]:
        response = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": rows.tolist()})
        assert response.status_code == 200, response.text
        served = next(reversed(client.app.state.model_cache.models.values()))  # the one used last
        return torch.tensor([item["embedding"] for item in response.json()["data"]]), served.embedder.precision

    got, precision = embed()
    assert precision == "fp32" and torch.allclose(got, want, atol=1e-5)
    deployed = client.post(f"/v1/models/{name}/deploy", headers=auth, json={"precision": "bf16"})
    assert deployed.status_code == 200 and deployed.json()["precision"] == "bf16"
    got, precision = embed()  # the same version, loaded anew at bf16
    assert precision == "bf16" and (got * want).sum(-1).min() > 0.999 and (got - want).abs().max() > 1e-4
    assert [(m["name"], m["precision"]) for m in listed_versions(client, auth)] == [(name, "bf16")]
    # a deploy without a precision returns to the server's default
    assert client.post(f"/v1/models/{name}/deploy", headers=auth).json()["precision"] is None
    got, precision = embed()
    assert precision == "fp32" and torch.allclose(got, want, atol=1e-5)
    refused = client.post(f"/v1/models/{name}/deploy", headers=auth, json={"precision": "fp16"})
    assert refused.status_code == 422 and "precision" in refused.text


def test_neighbours_are_the_training_records_nearest_as_the_deployment_embeds_them(client, auth, settings) -> None:
    name, fp32 = trained_model(settings, client, auth, "text")
    texts = [f"text number {i}" for i in range(16)]
    query = "a text about number 5"
    want = fp32.embed(texts).numpy() @ fp32.embed([query]).numpy()[0]
    found = {}
    for precision in ("fp32", "bf16"):
        deployed = client.post(f"/v1/models/{name}/deploy", headers=auth, json={"precision": precision})
        assert deployed.status_code == 200, deployed.text
        response = client.post(f"/v1/models/{name}/neighbors", headers=auth, json={"input": query, "k": 4})
        assert response.status_code == 200, response.text
        hits = response.json()
        assert [h["text"] for h in hits] == [texts[h["index"]] for h in hits]
        assert [h["label"] for h in hits] == [("even", "odd")[h["index"] % 2] for h in hits]
        scores = np.array([h["score"] for h in hits])
        assert np.all(np.diff(scores) <= 0) and scores[-1] >= np.sort(want)[-4] - 2e-3  # the 4 nearest
        found[precision] = {h["index"]: h["score"] for h in hits}
    assert all(abs(score - want[i]) < 1e-5 for i, score in found["fp32"].items())
    common = found["fp32"].keys() & found["bf16"].keys()  # bf16's bank and query are bf16's: near fp32, not equal
    assert common and max(abs(found["bf16"][i] - found["fp32"][i]) for i in common) > 1e-6
    assert all(abs(found["bf16"][i] - want[i]) < 2e-2 for i in common)

    vectors, _ = trained_model(settings, client, auth, "vectors")
    cases = [
        (vectors, {"input": "x"}, 422, "text models"),
        ("no-such-model", {"input": "x"}, 404, "no deployed model"),
        (name, {"input": "x", "k": 0}, 422, "k"),
        (name, {"input": ""}, 422, "input"),
        (name, {"input": "x", "query": "x"}, 422, '"field":"query"'),  # before: null, the name taken for a location
    ]
    for model, body, status, message in cases:
        response = client.post(f"/v1/models/{model}/neighbors", headers=auth, json=body)
        assert response.status_code == status and message in response.text, (model, body, response.text)


def test_metrics_report_requests_jobs_batches_and_cache(client, auth, settings, keys) -> None:
    name, _ = trained_model(settings, client, auth, "vectors")
    for _ in range(3):
        assert (
            client.post("/v1/embeddings", headers=auth, json={"model": name, "input": [[0.1] * 6]}).status_code == 200
        )
    refused = client.get("/metrics", headers=auth)  # tenants do not see operator metrics, and are told why
    assert refused.status_code == 403 and "admin key" in refused.json()["error"]["message"], refused.text
    admin = {"Authorization": f"Bearer {keys.make('ops', admin=True)}"}
    response = client.get("/metrics", headers=admin)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'embedtrain_http_requests_total{method="POST",route="/v1/embeddings",status="200"} 3.0' in text
    assert 'embedtrain_http_request_seconds_bucket{le="0.001",method="POST",route="/v1/embeddings"}' in text
    jobs = {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "embedtrain_jobs"
        for sample in family.samples
    }
    assert jobs["succeeded"] >= 1 and set(jobs) == {"queued", "running", "succeeded", "failed", "cancelled"}
    assert 'embedtrain_model_cache_total{result="miss"} 1.0' in text
    assert 'embedtrain_model_cache_total{result="hit"} 2.0' in text
    assert "embedtrain_embedding_batch_size_count 3.0" in text
    lone = [s for f in text_string_to_metric_families(text) if f.name == "embedtrain_embedding_lone_passes"
            for s in f.samples if s.name.endswith("_total")]  # fmt: skip
    assert sum(s.value for s in lone) == 3  # one client: every pass ran alone, on a thread count it chose


def test_request_size_limits_on_embeddings(tmp_path, pg_url, redis_url, keys) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    settings = make_settings(tmp_path, pg_url, redis_url, embed_max_inputs=3, embed_max_chars=20)
    auth = {"Authorization": f"Bearer {keys.make('limits')}"}
    with TestClient(create_app(settings)) as client:
        name, _ = trained_model(settings, client, auth, "text")
        too_many = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": ["a"] * 4})
        assert too_many.status_code == 422 and "at most 3 per request" in too_many.json()["error"]["message"]
        too_long = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": ["x" * 21]})
        assert too_long.status_code == 422 and "longer than 20 characters" in too_long.json()["error"]["message"]
        empty = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": [""]})
        assert empty.status_code == 422 and "empty string" in empty.json()["error"]["message"]
        nothing = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": []})
        assert nothing.status_code == 422 and "input is empty" in nothing.json()["error"]["message"]
        ok = client.post("/v1/embeddings", headers=auth, json={"model": name, "input": ["abc", "def", "ghi"]})
        assert ok.status_code == 200


def test_embeddings_route_refuses_bad_bodies_and_keys_as_every_route_does(client, auth, settings) -> None:
    """The route parses and authenticates by itself (api.plain_route): its errors match FastAPI's routes'."""
    name, _ = trained_model(settings, client, auth, "vectors")

    def post(body: bytes | str, headers: dict[str, str] = auth) -> httpx.Response:
        return client.post("/v1/embeddings", headers={**headers, "Content-Type": "application/json"}, content=body)

    not_json, jobs_not_json = post(b"{not json"), client.post("/v1/jobs", headers=auth, content=b"{not json")
    assert not_json.status_code == 422 and jobs_not_json.status_code == 422
    assert not_json.json()["error"]["type"] == jobs_not_json.json()["error"]["type"] == "invalid_request_error"
    assert "JSON" in not_json.json()["error"]["message"]
    wrong = post(f'{{"model": "{name}", "input": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], "encoding_format": "hex"}}')
    assert wrong.status_code == 422 and wrong.json()["error"]["param"] == "encoding_format", wrong.text
    assert post(b"[1, 2]").status_code == 422 and post(b"").status_code == 422
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer et_nope_nope"}):
        refused = post(b"{not json", headers)  # the key is checked first: no body is parsed for a stranger
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", refused.text
    operation = client.get("/openapi.json").json()["paths"]["/v1/embeddings"]["post"]
    assert operation["security"] == [{"HTTPBearer": []}]
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["required"] == ["model", "input"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("EmbeddingResponse")
