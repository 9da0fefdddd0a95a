"""The `embedtrain` CLI and the Python client against a live server and a real worker."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import uuid
import zipfile

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sqlalchemy import update
from typer.testing import CliRunner

from core.client import ApiError, Client
from core.client.cli import app
from core.inference import Embedder
from core.store.db import transaction
from core.store.tables import ApiKey
from tests.api.test_embeddings import LiveServer
from tests.conftest import free_port
from tests.worker.test_job_lifecycle import vector_config, vectors_csv


@pytest.mark.slow
def test_cli_walks_the_whole_workflow(client, auth, keys, worker, tmp_path) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    key = auth["Authorization"].removeprefix("Bearer ")
    data = tmp_path / "v.csv"
    data.write_bytes(vectors_csv(n=96).replace(b",label\n", b",category\n", 1))  # labels under another name
    config = tmp_path / "config.json"
    config.write_text(json.dumps(vector_config(epochs=2, checkpoint_every_steps=4)))  # 3 checkpoints
    with LiveServer(client.app) as base:
        cli = ["--url", base, "--key", key]

        def run(*args: str, code: int = 0, stdin: str | None = None) -> str:
            result = runner.invoke(app, [*cli, *args], input=stdin)
            assert result.exit_code == code, (args, result.output)
            return result.output

        dataset = json.loads(
            run("datasets", "upload", str(data), "--modality", "vectors", "--label-column", "category")
        )
        assert dataset["num_records"] == 96 and dataset["num_labels"] == 3 and dataset["details"]["shape"] == [96, 8]
        assert dataset["id"] in run("datasets", "list")
        job = json.loads(run("jobs", "submit", "--dataset", dataset["id"], "--config", str(config), "--name", "cli"))
        watched = run("jobs", "watch", job["id"], "--poll", "0.3")
        assert f"{job['id']} succeeded" in watched and "loss" in watched
        assert "succeeded" in run("jobs", "list", "--status", "succeeded")
        assert json.loads(run("jobs", "show", job["id"]))["status"] == "succeeded"
        # what a checkpoint is chosen by, from the CLI: its checkpoints, events and metric series
        with Client(base, key) as python_client:
            checkpoints = python_client.job_checkpoints(job["id"])
            series = python_client.job_metrics(job["id"])
        assert len(checkpoints) >= 2 and {"loss", "knn_top1"} <= set(series)
        output = run("jobs", "checkpoints", job["id"])
        listed = output.splitlines()
        (best,) = [c for c in checkpoints if c["best"]]  # the one "best" names, said under the table
        assert f"best (what --checkpoint best registers): step {best['step']}, {best['id']}" in output, output
        for checkpoint in checkpoints:  # each row: its id, step, epoch, and the held-out metrics where evaluated
            row = next(line for line in listed if checkpoint["id"] in line)
            assert f" {checkpoint['step']} " in row
            if "knn_top1" in checkpoint["metrics"]:
                assert f"{checkpoint['metrics']['knn_top1']:.4g}" in row
        events = run("jobs", "events", job["id"])
        assert all(kind in events for kind in ("queued", "running", "succeeded"))
        summary = run("jobs", "metrics", job["id"])
        loss = [point["value"] for point in series["loss"]]
        loss_row = next(line for line in summary.splitlines() if "│ loss " in line)
        assert all(f"{value:.4g}" in loss_row for value in (loss[0], loss[-1], min(loss), max(loss)))
        full = run("jobs", "metrics", job["id"], "--series", "loss")
        assert sum(f"│ {point['step']} " in full for point in series["loss"]) == len(loss)
        unknown = run("jobs", "metrics", job["id"], "--series", "accuracy", code=2)
        assert "no series 'accuracy'" in unknown and "knn_top1" in unknown
        first = checkpoints[0]["id"]  # an id from the table registers that checkpoint
        model = json.loads(run("models", "register", "--job", job["id"], "--name", "cli-model", "--checkpoint", first))
        assert model["version"] == 1 and model["checkpoint_id"] == first
        assert json.loads(run("models", "deploy", "cli-model"))["deployed"] is True
        assert json.loads(run("models", "deploy", "cli-model", "--precision", "bf16"))["precision"] == "bf16"
        assert "422" in run("models", "deploy", "cli-model", "--precision", "fp16", code=1)
        assert "cli-model" in run("models", "list")
        # the Python client with a vector model: lists of numbers, or an array
        with Client(base, key) as python_client:
            vectors = python_client.embed("cli-model", [[0.1] * 8, [0.2] * 8], dimensions=4)
            assert vectors.shape == (2, 4) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
            rows = np.array([[0.1] * 8, [0.2] * 8], dtype=np.float32)  # an array is sent as its rows (before: a
            assert np.array_equal(python_client.embed("cli-model", rows, dimensions=4), vectors)  # TypeError)
            with pytest.raises(ApiError) as refused:
                python_client.embed("cli-model", "a text")
            assert refused.value.status == 422 and refused.value.field == "input"
        saved = run("models", "download", "cli-model", "--out", str(tmp_path / "weights"))
        assert "model.safetensors" in saved
        offline = Embedder(tmp_path / "weights").embed(torch.tensor([[0.1] * 8, [0.2] * 8]))  # without the service
        head = (offline[:, :4] / offline[:, :4].norm(dim=1, keepdim=True)).numpy()
        assert np.allclose(head, vectors, atol=1e-2)  # the service serves it in bf16 (deployed so above)
        assert "404" in run("models", "download", "cli-model", "--out", str(tmp_path / "none"), "--version", "9",
                            code=1)  # fmt: skip
        assert not (tmp_path / "none" / "model.safetensors").exists()
        error = run("embed", "--model", "no-such-model", "hello", code=1)
        assert "404" in error and "no deployed model" in error
        # deletes, in the order they allow: the model version, then its job, then the dataset; each asks first
        assert "409" in run("jobs", "delete", job["id"], "--yes", code=1)  # cli-model version 1 serves its checkpoint
        asked = run("models", "delete", "cli-model", stdin="n\n", code=1)
        assert "Delete every version of model cli-model? This cannot be undone" in asked and "Aborted" in asked
        assert "undeploy it first" in run("models", "delete", "cli-model", stdin="y\n", code=1)
        run("models", "undeploy", "cli-model")
        assert "Aborted" in run("models", "delete", "cli-model", "--version", "1", code=1)  # no one to answer
        assert "cli-model" in run("models", "list")
        assert "deleted cli-model version 1" in run("models", "delete", "cli-model", "--version", "1", "--yes")
        assert "cli-model" not in run("models", "list")
        assert "Aborted" in run("jobs", "delete", job["id"], stdin="\n", code=1)  # the default answer is no
        assert json.loads(run("jobs", "show", job["id"]))["status"] == "succeeded"
        assert "deleted job" in run("jobs", "delete", job["id"], stdin="y\n")
        assert "404" in run("jobs", "show", job["id"], code=1)
        assert "Aborted" in run("datasets", "delete", dataset["id"], code=1)
        assert "deleted dataset" in run("datasets", "delete", dataset["id"], "-y")
        assert dataset["id"] not in run("datasets", "list")
        # keys: only admins create; anyone can revoke their own
        assert "403: creating keys needs an admin key" in run("keys", "create", "--owner", "x", code=1)
        admin = keys.make("cli-admin", admin=True)
        created = json.loads(
            runner.invoke(app, ["--url", base, "--key", admin, "keys", "create", "--owner", "bob"]).output
        )
        assert created["key"].startswith("et_") and created["owner"] == "bob"
        revoked = json.loads(
            runner.invoke(app, ["--url", base, "--key", created["key"], "keys", "revoke", created["id"], "-y"]).output
        )
        assert revoked["revoked_at"] is not None
        with transaction(keys.settings) as session:  # the admin key as `embedtrain-admin bootstrap` marks one
            session.execute(update(ApiKey).where(ApiKey.prefix == admin.split("_")[1]).values(from_environment=True))
        listed = runner.invoke(app, ["--url", base, "--key", admin, "keys", "list"])
        assert listed.exit_code == 0 and created["prefix"] in listed.output and created["key"] not in listed.output
        (row,) = [line for line in listed.output.splitlines() if admin.split("_")[1] in line]
        assert "yes, EMBEDTRAIN_ADMIN_KEY" in row, listed.output


def test_cli_embeds_text_to_json_and_npy(client, auth, settings, tmp_path) -> None:
    from tests.api.test_embeddings import trained_model

    name, embedder = trained_model(settings, client, auth, "text")
    runner = CliRunner(env={"COLUMNS": "200"})
    key = auth["Authorization"].removeprefix("Bearer ")
    with LiveServer(client.app) as base:
        out = runner.invoke(app, ["--url", base, "--key", key, "embed", "--model", name, "hello", "world"])
        assert out.exit_code == 0, out.output
        vectors = np.array(json.loads(out.output))
        assert np.allclose(vectors, embedder.embed(["hello", "world"]).numpy(), atol=1e-5)
        target = tmp_path / "e.npy"
        out = runner.invoke(app, ["--url", base, "--key", key, "embed", "--model", name, "--output", "npy", "--out",
                                  str(target)], input="first line\nsecond line\n")  # fmt: skip
        assert out.exit_code == 0, out.output
        assert np.load(target).shape == (2, 32)
        out = runner.invoke(app, ["--url", base, "--key", key, "embed", "--model", name], input="\n")
        assert out.exit_code == 2 and "nothing to embed" in out.output, out.output
        # more lines than one request takes: sent --batch-size at a time, one row per line in order
        lines = [f"line number {i}" for i in range(5)]
        out = runner.invoke(app, ["--url", base, "--key", key, "embed", "--model", name, "--batch-size", "2", "--out",
                                  str(target), "--output", "npy"], input="\n".join(lines) + "\n\n")  # fmt: skip
        assert out.exit_code == 0, out.output
        assert np.allclose(np.load(target), embedder.embed(lines).numpy(), atol=1e-5)
        out = runner.invoke(app, ["--url", base, "--key", key, "embed", "--model", name], input="a\n\nb\n")
        assert out.exit_code == 2 and "line 2 of stdin is blank" in out.output, out.output
        out = runner.invoke(app, ["--url", base, "--key", key, "embed", "--model", name], input=b"ok\n\xff bad\n")
        assert out.exit_code == 2 and "stdin is not UTF-8 text (byte 3)" in out.output, out.output  # not a traceback
        with Client(base, key) as python_client, pytest.raises(ApiError) as refused:
            python_client.embed(name, ["a", "b", "c", ""], batch_size=2)
        assert "input[1] is an empty string (in the request of inputs 2-3" in str(refused.value), refused.value
        # 0 is a value, not "unset": sent, and refused; before, delete_model(name, 0) deleted every version
        with Client(base, key) as python_client:
            for field, request in [("dimensions", lambda c: c.embed(name, "hi", dimensions=0)),
                                   ("version", lambda c: c.download_model(name, tmp_path / "weights", version=0)),
                                   ("version", lambda c: c.delete_model(name, version=0))]:  # fmt: skip
                with pytest.raises(ApiError) as refused:
                    request(python_client)
                assert (refused.value.status, refused.value.field) == (422, field), refused.value
            assert [m["id"] for m in python_client.list_models()] == [name]
        out = runner.invoke(app, ["--url", base, "--key", key, "embed", "--model", name, "--output", "csv", "hi"])
        assert out.exit_code == 2 and "'csv' is not one of" in out.output, out.output


def test_cli_embeds_vectors_and_images_from_files(client, auth, settings, tmp_path) -> None:
    """A vector model's inputs from a .npy (--vectors), an image model's from PNG or JPEG files (--image); before,
    the CLI sent only texts, which those models refuse."""
    from PIL import Image

    from tests.api.test_embeddings import trained_model

    vectors_model, _ = trained_model(settings, client, auth, "vectors")
    images_model, _ = trained_model(settings, client, auth, "image")
    rows = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    pictures = []
    for i, suffix in enumerate((".png", ".jpg", ".png")):
        pixels = np.random.default_rng(i).integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"p{i}{suffix}")
        pictures.append(tmp_path / f"p{i}{suffix}")
    runner = CliRunner(env={"COLUMNS": "200"})
    key = auth["Authorization"].removeprefix("Bearer ")
    with LiveServer(client.app) as base, Client(base, key) as python_client:

        def run(*args: str, code: int = 0) -> str:
            result = runner.invoke(app, ["--url", base, "--key", key, "embed", *args])
            assert result.exit_code == code, (args, result.output)
            return result.output

        out = run("--model", vectors_model, "--vectors", str(tmp_path / "rows.npy"), "--batch-size", "2")
        assert np.allclose(np.array(json.loads(out)), python_client.embed(vectors_model, rows), atol=1e-6)
        # the file kinds vectors datasets are uploaded as, a label column left out (before: "is not a .npy file")
        header = ",".join(f"x{j}" for j in range(6)) + ",label\n"
        (tmp_path / "rows.csv").write_text(header + "".join(",".join(map(repr, r.tolist())) + ",a\n" for r in rows))
        pq.write_table(pa.table({"embedding": rows.tolist()}), tmp_path / "rows.parquet")
        for name in ("rows.csv", "rows.parquet"):
            out = run("--model", vectors_model, "--vectors", str(tmp_path / name))
            assert np.allclose(np.array(json.loads(out)), python_client.embed(vectors_model, rows), atol=1e-6), name
        # gzipped, as the upload takes them (before: read as a .npy and refused, "the NPY file cannot be read")
        for name in ("rows.csv", "rows.npy"):
            (tmp_path / f"{name}.gz").write_bytes(gzip.compress((tmp_path / name).read_bytes()))
            out = run("--model", vectors_model, "--vectors", str(tmp_path / f"{name}.gz"))
            assert np.allclose(np.array(json.loads(out)), python_client.embed(vectors_model, rows), atol=1e-6), name
        (tmp_path / "cut.csv.gz").write_bytes(gzip.compress((tmp_path / "rows.csv").read_bytes())[:40])
        assert "cut.csv.gz: the file is not valid gzip" in run("--model", vectors_model, "--vectors",
                                                               str(tmp_path / "cut.csv.gz"), code=2)  # fmt: skip
        (tmp_path / "bad.csv").write_text("x0,x1\n1,oops\n")
        assert "bad.csv: column 'x1' is not numeric" in run("--model", vectors_model, "--vectors",
                                                            str(tmp_path / "bad.csv"), code=2)  # fmt: skip
        target = tmp_path / "images.npy"
        run("--model", images_model, *[f"--image={path}" for path in pictures], "--output", "npy", "--out",
            str(target))  # fmt: skip
        sent = [base64.b64encode(path.read_bytes()).decode() for path in pictures]
        assert np.allclose(np.load(target), python_client.embed(images_model, sent), atol=1e-6)
        assert np.load(target).shape[0] == 3
        # what cannot be sent is said before anything is; what the service refuses names the input
        np.save(tmp_path / "flat.npy", np.arange(6.0))
        assert "must be a 2-D array of shape (records, features), got shape (6,)" in run(
            "--model", vectors_model, "--vectors", str(tmp_path / "flat.npy"), code=2)  # fmt: skip
        (tmp_path / "not.npy").write_text("1,2,3\n")
        assert "the NPY file cannot be read" in run("--model", vectors_model, "--vectors", str(tmp_path / "not.npy"),
                                                    code=2)  # fmt: skip
        np.save(tmp_path / "nan.npy", np.full((2, 6), np.nan))  # said before anything is sent, as the upload says it
        assert "NaN or infinite values" in run("--model", vectors_model, "--vectors", str(tmp_path / "nan.npy"), code=2)
        np.save(tmp_path / "flags.npy", rows > 0)  # booleans, as 0 and 1 (before: "holds a bool array")
        out = run("--model", vectors_model, "--vectors", str(tmp_path / "flags.npy"))
        expected = python_client.embed(vectors_model, (rows > 0).astype(np.float32))
        assert np.allclose(np.array(json.loads(out)), expected, atol=1e-6)
        assert "one kind of input at a time" in run("--model", vectors_model, "--vectors", str(tmp_path / "rows.npy"),
                                                    "a text", code=2)  # fmt: skip
        refused = run("--model", images_model, "--image", str(tmp_path / "rows.npy"), code=1)
        assert "422" in refused and "input[0]" in refused, refused
        text = run("--model", images_model, "a text", code=1)  # before: only "input[0] is not valid base64"
        assert "this is an image model" in text and "--image" in text, text


def test_photos_too_many_for_one_request_are_embedded(client, auth, settings, tmp_path) -> None:
    """24 photo-sized JPEGs (1600x1200, 1.7 MB each) hold 55 MB of base64: before, the CLI and the Python client
    sent them in one request, which the service refused (413: its bodies are at most 16 MiB), and a photo of more
    than 12 MB (4800x3600, 15.5 MB) could not be sent at all. Now the CLI sends each image as the service reads it
    (shrunk to 512 pixels a side, a PNG), and the client splits its inputs into requests of at most 8 MB."""
    from PIL import Image

    from core.data.readers import ReadLimits, decode_image
    from tests.api.test_embeddings import trained_model

    model, embedder = trained_model(settings, client, auth, "image", name="image-photos")
    photos = []
    for i in range(24):
        pixels = np.random.default_rng(i).integers(0, 256, size=(1200, 1600, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"photo{i}.jpg", quality=90)
        photos.append(tmp_path / f"photo{i}.jpg")
    sent = [base64.b64encode(path.read_bytes()).decode() for path in photos]
    assert sum(map(len, sent)) > 3 * settings.max_body_bytes
    runner = CliRunner(env={"COLUMNS": "200"})
    key = auth["Authorization"].removeprefix("Bearer ")
    with LiveServer(client.app) as base, Client(base, key) as python_client:
        one_by_one = np.concatenate([python_client.embed(model, [photo]) for photo in sent])
        assert np.allclose(python_client.embed(model, sent), one_by_one, atol=1e-6)
        result = runner.invoke(app, ["--url", base, "--key", key, "embed", "--model", model,
                                     *[f"--image={path}" for path in photos], "--output", "npy", "--out",
                                     str(tmp_path / "photos.npy")])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert np.allclose(np.load(tmp_path / "photos.npy"), one_by_one, atol=1e-6)

        large = tmp_path / "large.jpg"
        pixels = np.random.default_rng(99).integers(0, 256, size=(3600, 4800, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(large, quality=90)
        with pytest.raises(ApiError, match="413: request body larger than"):  # sent as it is, alone
            python_client.embed(model, [base64.b64encode(large.read_bytes()).decode()])
        result = runner.invoke(app, ["--url", base, "--key", key, "embed", "--model", model, f"--image={large}"])
        assert result.exit_code == 0, result.output
        as_read = decode_image(large.read_bytes(), ReadLimits(max_image_side=settings.max_image_side), "large.jpg")
        assert np.allclose(json.loads(result.output), embedder.embed(as_read[None]).numpy(), atol=1e-5)


def test_cli_says_when_nothing_answers_at_the_url() -> None:
    import socket

    with socket.socket() as probe:  # a loopback port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["--url", url, "--key", "et_x", "jobs", "list"])
    assert result.exit_code == 1 and f"no answer from {url} (ConnectError" in result.output, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # an exit, not an uncaught ConnectError


def test_cli_lists_page_by_page_and_says_where_the_page_sits(client, auth) -> None:
    """`datasets list` and `jobs list` show one page (50 rows unless --limit), and say so when there are more."""
    ids = [client.post("/v1/datasets", headers=auth, data={"modality": "vectors"},
                       files={"file": (f"v{i}.csv", b"a,b\n1,2\n")}).json()["id"] for i in range(3)][::-1]  # fmt: skip
    runner = CliRunner(env={"COLUMNS": "200"})
    key = auth["Authorization"].removeprefix("Bearer ")
    with LiveServer(client.app) as base:

        def listed(*args: str) -> str:
            result = runner.invoke(app, ["--url", base, "--key", key, "datasets", "list", *args])
            assert result.exit_code == 0, result.output
            return result.output

        first, rest, everything = listed("--limit", "2"), listed("--limit", "2", "--offset", "2"), listed()
        assert [i in first for i in ids] == [True, True, False]
        assert "rows 1-2 of 3; --offset 2 for the next page" in first
        assert [i in rest for i in ids] == [False, False, True] and rest.rstrip().endswith("rows 3-3 of 3")
        assert all(i in everything for i in ids) and "rows" not in everything.split("┘")[-1]
        jobs = runner.invoke(app, ["--url", base, "--key", key, "jobs", "list", "--limit", "1", "--offset", "5"])
        assert jobs.exit_code == 0 and "no rows from offset 5; 0 in all" in jobs.output, jobs.output
        narrow = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["--url", base, "--key", key, "datasets", "list"])
        assert all(i in narrow.output for i in ids) and " vectors " in narrow.output, narrow.output  # not "vect…"
        # into a pipe or a file (no terminal, no COLUMNS): whole rows, where rich cut them to 80 columns
        piped = CliRunner(env={"COLUMNS": None}).invoke(app, ["--url", base, "--key", key, "datasets", "list"])
        created = client.get("/v1/datasets", headers=auth).json()["items"][0]["created_at"][:19]
        assert created in piped.output and " records " in piped.output and "…" not in piped.output, piped.output
        refused = runner.invoke(app, ["--url", base, "--key", key, "datasets", "list", "--limit", "0"])
        assert refused.exit_code == 2 and "--limit" in refused.output, refused.output


def test_cli_refuses_unusable_files_before_sending_anything(tmp_path) -> None:
    """Before, tracebacks (JSONDecodeError, FileExistsError, FileNotFoundError after the texts were embedded); now
    usage errors naming the file."""
    broken, directory = tmp_path / "run.json", tmp_path / "configs"
    broken.write_text('{"data": {')
    directory.mkdir()
    runner = CliRunner(env={"COLUMNS": "500"})  # the message, with its temporary path, on one line
    url = ["--url", "http://127.0.0.1:9", "--key", "et_x"]  # never reached: the file is refused first
    result = runner.invoke(app, [*url, "jobs", "submit", "--dataset", "d", "--config", str(broken)])
    assert result.exit_code == 2 and "is not a JSON file: Expecting property name" in result.output, result.output
    result = runner.invoke(app, [*url, "jobs", "submit", "--dataset", "d", "--config", str(directory)])
    assert result.exit_code == 2 and "is a directory" in result.output, result.output
    result = runner.invoke(app, [*url, "models", "download", "m", "--out", str(broken)])
    assert result.exit_code == 2 and "is a file" in result.output, result.output
    result = runner.invoke(app, [*url, "embed", "--model", "m", "--output", "npy", "--out", str(tmp_path / "no" / "e.npy"),
                                 "hi"])  # fmt: skip
    assert result.exit_code == 2 and f"{tmp_path / 'no'} is not a directory" in result.output, result.output
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"\x89PNG")
    globbed = [str(tmp_path / name) for name in ("a.png", "b.png", "c.png")]  # what `--image *.png` passes
    result = runner.invoke(app, [*url, "embed", "--model", "m", "--image", *globbed])
    assert result.exit_code == 2 and "each image file needs its own --image" in result.output, result.output
    assert f"'{globbed[1]}' and 1 more came as texts" in result.output, result.output  # before: "one kind of input"


def test_client_wait_rides_out_an_api_restart(client, auth) -> None:
    """A job trains on while its API restarts (a redeploy): wait(), and so `jobs watch`, polls on through the
    outage and returns how the job ended; before, the first poll that found no server ended it with ConnectError."""
    key = auth["Authorization"].removeprefix("Bearer ")
    upload = client.post("/v1/datasets", headers=auth, data={"modality": "vectors"},
                         files={"file": ("v.csv", vectors_csv(n=32))})  # fmt: skip
    job = client.post("/v1/jobs", headers=auth, json={"dataset_id": upload.json()["id"], "config": vector_config()})
    job_id, port, seen, outcome = job.json()["id"], free_port(), [], {}

    def wait() -> None:
        try:
            with Client(f"http://127.0.0.1:{port}", key) as waiting:
                outcome["job"] = waiting.wait(job_id, poll_s=0.05, on_update=lambda j: seen.append(j["status"]))
        except Exception as error:  # kept for the assertion below, which shows it
            outcome["error"] = error

    waiter = threading.Thread(target=wait)
    with LiveServer(client.app, port):
        waiter.start()
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
    assert seen == seen[:1] + ["queued"] * (len(seen) - 1) and seen[0] == "queued", seen
    time.sleep(0.5)  # nothing listens at the port: each poll finds the service away
    assert waiter.is_alive(), outcome
    with LiveServer(client.app, port) as base, Client(base, key) as other:
        other.cancel_job(job_id)  # a queued job is cancelled at once
        waiter.join(timeout=30)
    assert outcome.get("job", {}).get("status") == "cancelled", outcome

    with Client(f"http://127.0.0.1:{free_port()}", key) as nowhere, pytest.raises(httpx.ConnectError):
        nowhere.wait(job_id, outage_s=60)  # the first poll's error at once: most likely a wrong URL


def test_cli_prints_names_and_messages_verbatim(client, auth) -> None:
    """Names and messages come from users and the server; rich read brackets in them as its markup: "scan [v2]"
    listed as "scan ", a name holding "[/x]" ended `datasets list` in a MarkupError traceback, as did an error
    message quoting it. Into a pipe a message is one line, as tables are, not cut at 80 columns."""
    for name in ("scan [v2]", "odd [/x] name", "emoji :warning: text"):
        answer = client.post("/v1/datasets", headers=auth, data={"modality": "vectors", "name": name},
                             files={"file": ("v.csv", b"a,b\n1,2\n")})  # fmt: skip
        assert answer.status_code == 201, answer.text
    key = auth["Authorization"].removeprefix("Bearer ")
    piped = CliRunner(env={"COLUMNS": None})  # no terminal, no width: as under `| grep` or `> out.txt`
    with LiveServer(client.app) as base:
        listed = piped.invoke(app, ["--url", base, "--key", key, "datasets", "list"])
        assert listed.exit_code == 0, listed.output
        assert all(name in listed.output for name in ("scan [v2]", "odd [/x] name", "emoji :warning: text"))
        missing = "[x]" + "0" * 80  # its 404 names it, in a message longer than 80 columns
        shown = piped.invoke(app, ["--url", base, "--key", key, "jobs", "show", missing])
    assert shown.exit_code == 1 and isinstance(shown.exception, SystemExit), shown.output
    (line,) = [line for line in shown.output.splitlines() if line.strip()]
    assert line.startswith("error 404") and f"job {missing} not found" in line, shown.output


def test_every_problem_of_a_refused_config_is_said_at_once(client, auth, tmp_path) -> None:
    """The API lists each problem of a body in ``error.details``; the client kept the first, so a config with three
    mistakes took three submissions to find them. Now ApiError holds them all and the CLI prints each."""
    dataset = client.post("/v1/datasets", headers=auth, data={"modality": "vectors"},
                          files={"file": ("v.csv", vectors_csv())}).json()  # fmt: skip
    config = vector_config()
    config["model"] |= {"hidden_dim": 2, "num_layers": 99}
    config["loss"] = {"temperature": 0}
    (tmp_path / "run.json").write_text(json.dumps(config))
    key = auth["Authorization"].removeprefix("Bearer ")
    with LiveServer(client.app) as base:
        with Client(base, key) as python_client, pytest.raises(ApiError) as refused:
            python_client.submit_job(dataset["id"], config)
        result = CliRunner(env={"COLUMNS": "200"}).invoke(
            app, ["--url", base, "--key", key, "jobs", "submit", "--dataset", dataset["id"], "--config",
                  str(tmp_path / "run.json")],
        )  # fmt: skip
    fields = ["config.model.hidden_dim", "config.model.num_layers", "config.loss.temperature"]
    assert [d["field"] for d in refused.value.details] == fields, refused.value.details
    assert refused.value.field == fields[0] and all(f"{field}: " in str(refused.value) for field in fields)
    said = result.output
    assert result.exit_code == 1 and all(f"{field}: Input should be" in said for field in fields), said


def test_the_client_waits_out_a_rate_limit_as_the_answer_says(tmp_path, pg_url, redis_url, keys) -> None:
    """A script submitting more jobs (or embedding requests) than its key's per-minute rate failed at the first 429;
    OpenAI's client waits as Retry-After says and sends again, and so does this one (a few times)."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.conftest import make_settings

    limited = make_settings(tmp_path, pg_url, redis_url, rate_jobs_per_min=60)  # a burst of 60, then 1 a second
    key = keys.make(f"busy-{time.time_ns()}")
    with TestClient(create_app(limited)) as app_client, LiveServer(app_client.app) as base:
        dataset = app_client.post("/v1/datasets", headers={"Authorization": f"Bearer {key}"},
                                  data={"modality": "vectors"}, files={"file": ("v.csv", vectors_csv())}).json()  # fmt: skip
        with Client(base, key) as python_client:
            jobs = [python_client.submit_job(dataset["id"], vector_config(), name=f"j{i}") for i in range(62)]
            assert len({job["id"] for job in jobs}) == 62  # the 61st and 62nd waited for their tokens
        with Client(base, key, rate_limit_retries=0) as impatient, pytest.raises(ApiError) as refused:
            for _ in range(3):
                impatient.submit_job(dataset["id"], vector_config())
    assert refused.value.status == 429 and refused.value.retry_after >= 1, refused.value


def test_a_directory_of_class_folders_uploads_as_an_image_dataset(client, auth, tmp_path) -> None:
    """Images sit in folders on disk; before, the CLI refused a directory ("is a directory") and the client raised
    IsADirectoryError, so each user zipped it by hand."""
    from PIL import Image

    folder = tmp_path / "pets"
    for kind, count in (("cats", 3), ("dogs", 2)):
        (folder / kind).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (12, 10), (40 * i, 100, 200)).save(folder / kind / f"{i}.{'png' if i else 'JPG'}")
    Image.new("RGB", (12, 10), (9, 9, 9)).save(folder / "dogs" / "2.webp")  # before, left out of the ZIP unseen
    (folder / "cats" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # what a Mac leaves beside them
    (folder / "dogs" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")  # and Windows
    (folder / "notes.txt").write_text("not an image")
    runner = CliRunner(env={"COLUMNS": "200"})
    key = auth["Authorization"].removeprefix("Bearer ")
    with LiveServer(client.app) as base:
        result = runner.invoke(app, ["--url", base, "--key", key, "datasets", "upload", str(folder), "--modality",
                                     "image"])  # fmt: skip
        assert result.exit_code == 0, result.output
        dataset = json.loads(result.output)
        assert (dataset["name"], dataset["format"], dataset["num_records"]) == ("pets", "zip", 6), dataset
        assert dataset["details"]["label_names"] == ["cats", "dogs"] and dataset["details"]["shape"] == [6, 3, 10, 12]
        refused = runner.invoke(app, ["--url", base, "--key", key, "datasets", "upload", str(folder), "--modality",
                                      "text"])  # fmt: skip
        assert refused.exit_code == 2 and "a directory uploads as an image dataset" in refused.output, refused.output
        with Client(base, key) as python_client:
            again = python_client.upload_dataset(folder, "image", name="pets-again")
            assert (again["name"], again["num_records"], again["num_labels"]) == ("pets-again", 6, 2), again
        (folder / "cats" / "IMG_0001.heic").write_bytes(b"\0\0\0\x18ftypheic")  # a phone's photo
        heic = runner.invoke(app, ["--url", base, "--key", key, "datasets", "upload", str(folder), "--modality",
                                   "image"])  # fmt: skip
        assert heic.exit_code == 1 and "entry 'cats/IMG_0001.heic' is an image in a format this service does not " \
            "read" in " ".join(heic.output.split()), heic.output  # fmt: skip


def test_a_folders_large_photos_are_sent_shrunk_as_the_service_reads_them(tmp_path) -> None:  # noqa: ANN001
    """A phone's photos are ~3 MB each, so that a folder of a few hundred passed the upload limit although the
    service keeps them at 512 pixels a side. The client now sends such images as the service reads them (upright,
    shrunk, a lossless PNG): the service reads exactly the pixels it would have read from the originals."""
    import io

    from PIL import Image

    from core.client.client import zip_class_folders
    from core.data.readers import ReadLimits, read_records

    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    for kind in ("cats", "dogs"):
        (folder / kind).mkdir(parents=True)
        for i in range(2):  # noisy photos, as large as a phone's, the second of each stored sideways (EXIF 6)
            image = Image.fromarray(rng.integers(0, 256, size=(1512, 2016, 3), dtype=np.uint8))
            exif = image.getexif()
            exif[0x0112] = 6 if i else 1
            image.save(folder / kind / f"IMG_{i}.jpg", quality=90, exif=exif.tobytes())
    Image.new("L", (40, 30), 77).save(folder / "dogs" / "small.png")  # no larger than the bound: sent as it is
    (folder / "cats" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # sent as it is, for the service to name

    archives = {}
    for side in (None, 512):
        buffer = io.BytesIO()
        zip_class_folders(folder, buffer, max_image_side=side)
        archives[side] = buffer.getvalue()
        with zipfile.ZipFile(io.BytesIO(archives[side])) as archive:
            assert sorted(archive.namelist()) == ["cats/IMG_0.jpg", "cats/IMG_1.jpg", "cats/broken.jpg",
                                                  "dogs/IMG_0.jpg", "dogs/IMG_1.jpg", "dogs/small.png"]  # fmt: skip
            assert archive.read("dogs/small.png") == (folder / "dogs" / "small.png").read_bytes()
            assert archive.read("cats/broken.jpg") == b"\xff\xd8 not a jpeg"
            if side:
                with Image.open(io.BytesIO(archive.read("cats/IMG_1.jpg"))) as sent:
                    assert (sent.format, sent.size) == ("PNG", (384, 512))  # upright: the portrait it shows
    assert len(archives[512]) < len(archives[None]) / 3
    (folder / "cats" / "broken.jpg").unlink()
    read = {}
    for side in (None, 512):
        buffer = io.BytesIO()
        zip_class_folders(folder, buffer, max_image_side=side)
        (tmp_path / f"{side}.zip").write_bytes(buffer.getvalue())
        read[side] = read_records(tmp_path / f"{side}.zip", "image", "zip", ReadLimits(max_image_side=512))
    assert read[512].images.shape == read[None].images.shape == (5, 3, 384, 512)
    assert np.array_equal(read[512].images, read[None].images) and read[512].labels.tolist() == [0, 0, 1, 1, 1]


def test_a_job_submitted_without_a_modality_takes_its_datasets(client, auth, tmp_path) -> None:
    """data.modality is the one field a config needs, and the dataset already says it (the service fills it in);
    before, `jobs submit` needed a config file naming it, and the client a config spelling it out."""
    rows = vectors_csv(n=400)  # a default batch (256) and more
    dataset = client.post("/v1/datasets", headers=auth, data={"modality": "vectors"},
                          files={"file": ("v.csv", rows)}).json()  # fmt: skip
    (tmp_path / "short.json").write_text(json.dumps({"train": {"epochs": 2, "batch_size": 16}}))
    key = auth["Authorization"].removeprefix("Bearer ")
    runner = CliRunner(env={"COLUMNS": "200"})
    with LiveServer(client.app) as base, Client(base, key) as python_client:
        bare = runner.invoke(app, ["--url", base, "--key", key, "jobs", "submit", "--dataset", dataset["id"]])
        assert bare.exit_code == 0, bare.output
        assert json.loads(bare.output)["config"]["data"]["modality"] == "vectors"
        short = runner.invoke(app, ["--url", base, "--key", key, "jobs", "submit", "--dataset", dataset["id"],
                                    "--config", str(tmp_path / "short.json")])  # fmt: skip
        submitted = json.loads(short.output)["config"]
        assert submitted["data"]["modality"] == "vectors" and submitted["train"]["epochs"] == 2
        job = python_client.submit_job(dataset["id"], {"data": {"val_fraction": 0.2}})
        assert job["config"]["data"] == {**job["config"]["data"], "modality": "vectors", "val_fraction": 0.2}
        with pytest.raises(ApiError) as refused:  # a modality given is the caller's: a wrong one is still refused
            python_client.submit_job(dataset["id"], {"data": {"modality": "text"}})
        assert refused.value.status == 422 and "the dataset holds vectors" in refused.value.message
        with pytest.raises(ApiError) as missing:
            python_client.submit_job("no-such-dataset")
        assert missing.value.status == 404 and "dataset no-such-dataset not found" in missing.value.message


def test_the_cli_and_the_client_name_a_text_files_columns(client, auth, tmp_path) -> None:
    """A retrieval set's query and passage columns, named at upload from the CLI and from Python."""
    path = tmp_path / "q.csv"
    path.write_text("question,answer,sentence\nwhere is paris,in france,paris is a city\nwho wrote it,she did,a b\n")
    key = auth["Authorization"].removeprefix("Bearer ")
    runner = CliRunner(env={"COLUMNS": "200"})
    with LiveServer(client.app) as base, Client(base, key) as python_client:
        cli = ["--url", base, "--key", key, "datasets", "upload", str(path), "--modality", "text"]
        pairs = runner.invoke(app, [*cli, "--anchor-column", "question", "--positive-column", "answer"])
        assert pairs.exit_code == 0, pairs.output
        details = json.loads(pairs.output)["details"]
        assert (details["paired"], details["anchor_column"], details["positive_column"]) == (True, "question", "answer")
        texts = python_client.upload_dataset(path, "text", text_column="sentence")
        assert texts["details"]["paired"] is False and texts["details"]["text_column"] == "sentence"
        shown = runner.invoke(app, ["--url", base, "--key", key, "datasets", "show", texts["id"]])
        assert shown.exit_code == 0 and json.loads(shown.output)["details"]["text_column"] == "sentence", shown.output
        half = runner.invoke(app, [*cli, "--anchor-column", "question"])
        assert half.exit_code != 0 and "positive_column is missing" in half.output, half.output


def test_the_cli_and_the_client_start_a_job_from_a_registered_model(client, auth, settings, tmp_path) -> None:
    """`jobs submit --start-from NAME[:VERSION]` and ``submit_job(start_from=..., start_version=...)``."""
    from tests.api.test_embeddings import trained_model
    from tests.api.test_start_from import vectors

    name, _ = trained_model(settings, client, auth, "vectors", name=f"cli-base-{uuid.uuid4().hex[:8]}")
    dataset_id = vectors(client, auth)
    (tmp_path / "c.json").write_text(json.dumps({"data": {"val_fraction": 0.0}, "train": {"batch_size": 8}}))
    key = auth["Authorization"].removeprefix("Bearer ")
    runner = CliRunner(env={"COLUMNS": "200"})
    with LiveServer(client.app) as base, Client(base, key) as python_client:
        cli = ["--url", base, "--key", key, "jobs", "submit", "--dataset", dataset_id, "--config",
               str(tmp_path / "c.json")]  # fmt: skip
        for given in (name, f"{name}:1"):
            submitted = runner.invoke(app, [*cli, "--start-from", given])
            assert submitted.exit_code == 0, submitted.output
            assert json.loads(submitted.output)["start_from"]["version"] == 1, given
        bad = runner.invoke(app, [*cli, "--start-from", f"{name}:one"])
        assert bad.exit_code != 0 and "the version after ':' must be a number" in bad.output, bad.output
        missing = runner.invoke(app, [*cli, "--start-from", f"{name}:7"])
        assert missing.exit_code != 0 and f"model {name!r} has no version 7" in missing.output, missing.output
        job = python_client.submit_job(dataset_id, {"data": {"val_fraction": 0.0}, "train": {"batch_size": 8}},
                                       start_from=name, start_version=1)  # fmt: skip
        assert job["start_from"]["model"] == name and job["config"]["model"]["output_dim"] == 12


def test_the_cli_and_the_client_resume_a_cancelled_job(client, auth) -> None:
    """`jobs resume ID` and ``resume_job``: a cancelled job is queued again; one that cannot be is refused, saying
    why."""
    from tests.worker.test_job_lifecycle import submit, upload

    job_id = submit(client, auth, upload(client, auth, vectors_csv(n=40))["id"], vector_config())["id"]
    key = auth["Authorization"].removeprefix("Bearer ")
    runner = CliRunner(env={"COLUMNS": "200"})
    with LiveServer(client.app) as base, Client(base, key) as python_client:
        assert python_client.cancel_job(job_id)["status"] == "cancelled"
        resumed = runner.invoke(app, ["--url", base, "--key", key, "jobs", "resume", job_id])
        assert resumed.exit_code == 0, resumed.output
        assert json.loads(resumed.output)["status"] == "queued"
        assert python_client.resume_job(job_id)["status"] == "queued"  # queued already: as it is
        python_client.cancel_job(job_id)
        assert python_client.resume_job(job_id)["status"] == "queued"
        unknown = runner.invoke(app, ["--url", base, "--key", key, "jobs", "resume", "no-such-job"])
        assert unknown.exit_code != 0 and "job no-such-job not found" in unknown.output, unknown.output
