"""The user story shared by the end-to-end tests: upload digits, train, register, deploy, embed."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

from core.inference import Embedder
from core.store.storage import Storage
from tests.conftest import digits_npz, wait_for

DIGITS_CONFIG = {
    "data": {"modality": "image", "val_fraction": 0.2},
    "model": {"kind": "resnet", "width": 8, "blocks": [1, 1], "image_size": 8},
    "head": {"hidden_dim": 64, "projection_dim": 32},
    "loss": {"temperature": 0.2},
    "train": {"epochs": 2, "batch_size": 128, "checkpoint_every_steps": 5, "keep_checkpoints": None},
    "eval": {"knn_k": 5, "max_samples": 500},
}


def upload_digits(client, auth) -> dict:
    response = client.post("/v1/datasets", headers=auth, data={"modality": "image", "name": "digits"},
                           files={"file": ("digits.npz", digits_npz())})  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()


def wait_status(client, auth, job_id: str, statuses: tuple[str, ...], timeout: float = 180.0) -> dict:
    def done():
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
        return job if job["status"] in statuses else None

    return wait_for(done, timeout, what=f"job {job_id} to reach {statuses}")


def digits_flow(client, auth, storage_root, expected_queue: str) -> None:
    """Upload digits, train, check the records, register, deploy, embed, compare with core."""
    dataset = upload_digits(client, auth)
    assert dataset["num_records"] == 1797 and dataset["num_labels"] == 10
    assert dataset["details"]["shape"] == [1797, 1, 8, 8]

    response = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset["id"], "name": "digits",
                                                          "config": DIGITS_CONFIG})  # fmt: skip
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["queue"] == expected_queue

    job = wait_status(client, auth, job["id"], ("succeeded", "failed", "cancelled"))
    assert job["status"] == "succeeded", job
    total = (1797 - 359) // 128 * 2
    assert job["progress"]["step"] == job["progress"]["total_steps"] == total
    assert job["progress"]["fraction"] == 1.0 and job["attempts"] == 1
    assert "knn_top1" in job["metrics"] and "uniformity" in job["metrics"]
    stamps = [job["created_at"], job["started_at"], job["finished_at"], job["updated_at"]]
    assert all(stamp.endswith("Z") for stamp in stamps), stamps  # UTC, marked as such, on every backend

    series = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth).json()["series"]
    assert [p["step"] for p in series["loss"]] == list(range(1, total + 1))
    assert [p["step"] for p in series["knn_top1"]] == [0, total // 2, total]  # the starting weights', each epoch's
    checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()
    # the interval's, the end's, and the first epoch's evaluation (the best so far): 11 steps an epoch
    assert [c["step"] for c in checkpoints] == [5, 10, total // 2, 15, 20, total]
    assert checkpoints[2]["metrics"]["knn_top1"] == series["knn_top1"][1]["value"] and not checkpoints[1]["metrics"]
    evaluated = [c for c in checkpoints if "knn_top1" in c["metrics"]]  # the one "best" names is marked
    best = max(evaluated, key=lambda c: (c["metrics"]["knn_top1"], c["step"]))
    assert [c["id"] for c in checkpoints if c["best"]] == [best["id"]], checkpoints
    kinds = [e["kind"] for e in client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()]
    assert kinds == ["queued", "running", "succeeded"]

    model = client.post("/v1/models", headers=auth, json={"job_id": job["id"], "checkpoint": "last", "name": "digits"})
    assert model.status_code == 201, model.text
    assert model.json()["version"] == 1 and model.json()["dimensions"] == 16
    deployed = client.post("/v1/models/digits/deploy", headers=auth)
    assert deployed.status_code == 200 and deployed.json()["deployed"] is True
    assert deployed.json()["created_at"].endswith("Z") and deployed.json()["deployed_at"].endswith("Z")

    images = np.round(load_digits().images[:5] / 16.0 * 255).astype(np.uint8)
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image, mode="L").save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    response = client.post("/v1/embeddings", headers=auth, json={"model": "digits", "input": encoded})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == "digits" and body["usage"]["total_tokens"] == 5
    served = np.array([item["embedding"] for item in body["data"]])
    assert served.shape == (5, 16)
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)

    last = Storage(storage_root).path(f"checkpoints/{job['id']}/step-{total:08d}")
    direct = Embedder(last).embed(images[:, None].astype(np.float32) / 255.0)
    assert torch.allclose(torch.as_tensor(served, dtype=torch.float32), direct, atol=1e-5)

    b64 = client.post(
        "/v1/embeddings",
        headers=auth,
        json={"model": "digits", "input": encoded[:1], "encoding_format": "base64", "dimensions": 4},
    )
    vector = np.frombuffer(base64.b64decode(b64.json()["data"][0]["embedding"]), dtype="<f4")
    assert vector.shape == (4,) and abs(np.linalg.norm(vector) - 1) < 1e-5
