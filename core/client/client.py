"""``Client``: upload, train, wait, deploy, embed over the REST API.

from core.client import Client
client = Client("http://127.0.0.1:8000", key="et_...")
dataset = client.upload_dataset("digits.npz", modality="image")
job = client.submit_job(dataset["id"], {"data": {"modality": "image"}, "train": {"epochs": 5}})
job = client.wait(job["id"])
client.register_model(job["id"], name="digits", checkpoint="best")
client.deploy("digits")
vectors = client.embed("digits", [png_base64])       # (n, d) numpy array
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import numpy as np

from core.data.readers import DatasetError, ReadLimits, decode_image, image_file

CONFIG_FILE = Path(os.environ.get("EMBEDTRAIN_CONFIG", Path.home() / ".config" / "embedtrain" / "config.toml"))
TERMINAL = ("succeeded", "failed", "cancelled")
AWAY = (502, 503, 504)  # the service (or a proxy before it) away for a while: its database down, a restart
# core.train.checkpoint.WEIGHTS_FILE, the name core.inference.Embedder reads (not imported: the client needs no torch)
WEIGHTS_FILE = "model.safetensors"


def zip_class_folders(folder: Path, archive: BinaryIO, max_image_side: int | None = 512) -> None:
    """Write ``folder``'s images, at their paths under it (``<class>/<image>.png``), as a ZIP into ``archive``; what
    the readers skip (files that are not images, dot-named files and folders, ``__MACOSX/``) is left out, and an
    image in a format they do not read goes in, for the service to refuse by name. Stored, not compressed: the images
    are.

    An image larger than ``max_image_side`` on its longer side goes in as the service reads it when its own bound
    (``EMBEDTRAIN_MAX_IMAGE_SIDE``) is that: upright and shrunk, as a lossless PNG under its own name. A phone's photo
    is then at most 0.59 MB (PNG's worst case, noise) instead of ~3 MB: 1,800 or more fit the upload limit (1 GiB),
    and the service reads the same pixels. ``None`` sends every file as it is."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for file in sorted(folder.rglob("*")):
            name = file.relative_to(folder).as_posix()
            if not (file.is_file() and image_file(name)):
                continue
            shrunk = shrunk_as_read(file, name, max_image_side) if max_image_side else None
            if shrunk is None:
                out.write(file, name)
            else:
                out.writestr(name, shrunk)


def shrunk_as_read(file: Path, name: str, max_side: int) -> bytes | None:
    """``file``'s pixels as the service reads them under ``max_side`` (:func:`core.data.readers.decode_image`), as a
    PNG; None where it is no larger, or where it cannot be read here: it goes as it is, and the service names what
    is wrong with it (a format it does not read, a corrupt or oversized image)."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            if max(image.size) <= max_side:
                return None
        pixels = decode_image(file.read_bytes(), ReadLimits(max_image_side=max_side), name)
    except (OSError, DatasetError, Image.DecompressionBombError):
        return None
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _batches(inputs: list[Any], most: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive runs of ``inputs`` of at most ``most`` inputs and ``max_bytes`` of JSON
    (an input larger than that alone)."""
    start, size = 0, 0
    for index, item in enumerate(inputs):
        length = len(item) + 3 if isinstance(item, str) else len(json.dumps(item))  # its quotes (or digits) and comma
        if index > start and (index - start == most or size + length > max_bytes):
            yield start, index
            start, size = index, 0
        size += length
    yield start, len(inputs)


class ApiError(RuntimeError):
    """A 4xx/5xx answer, with the service's message and the field it names; ``details``: every problem of a refused
    body (``{"field", "message"}``, the first being ``message``'s), each a line of its own in the error's text."""

    def __init__(self, status: int, message: str, field: str | None, retry_after: float | None = None,
                 details: list[dict] | None = None) -> None:  # fmt: skip
        more = "".join(f"\n  {d['field']}: {d['message']}" if d.get("field") else f"\n  {d['message']}"
                       for d in (details or [])[1:])  # fmt: skip
        super().__init__(f"{status}: {message}" + (f" (field: {field})" if field else "") + more)
        self.status, self.message, self.field, self.retry_after = status, message, field, retry_after
        self.details = details or []


def default_settings() -> tuple[str, str | None]:
    """URL and key from EMBEDTRAIN_URL / EMBEDTRAIN_API_KEY, else the config file, else localhost and none."""
    url, key = os.environ.get("EMBEDTRAIN_URL"), os.environ.get("EMBEDTRAIN_API_KEY")
    if (url is None or key is None) and CONFIG_FILE.is_file():
        stored = tomllib.loads(CONFIG_FILE.read_text())
        url, key = url or stored.get("url"), key or stored.get("api_key")
    return url or "http://127.0.0.1:8000", key


class Client:
    """The REST API as Python methods. Every method raises :class:`ApiError` on an error answer.

    A request refused by the key's rate limit (429) is sent again after the answer's Retry-After, up to
    ``rate_limit_retries`` times (uploads excepted: their file was read), as OpenAI's client does.
    """

    MAX_RATE_WAIT_S = 60.0  # a longer Retry-After is raised rather than slept through

    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 60.0,
                 rate_limit_retries: int = 3) -> None:  # fmt: skip
        default_url, default_key = default_settings()
        headers = {"Authorization": f"Bearer {key or default_key}"} if (key or default_key) else {}
        self.http = httpx.Client(base_url=url or default_url, headers=headers, timeout=timeout)
        self.rate_limit_retries = rate_limit_retries

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        for _ in range(0 if "files" in kwargs else self.rate_limit_retries):  # an upload's file was read
            wait = response.headers.get("Retry-After", "") if response.status_code == 429 else ""
            if not wait.isdigit() or float(wait) > self.MAX_RATE_WAIT_S:
                break
            time.sleep(float(wait))
            response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            self._raise(response)
        return response.json() if response.content else None

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        """Raise the error answer as an :class:`ApiError`."""
        retry_after = response.headers.get("Retry-After")
        retry_after = float(retry_after) if retry_after and retry_after.isdigit() else None  # seconds, not a date
        try:
            error = response.json()["error"]
            raise ApiError(response.status_code, error["message"], error.get("param"), retry_after,
                           error.get("details"))  # fmt: skip
        except (ValueError, KeyError):
            raise ApiError(response.status_code, response.text[:500], None, retry_after) from None

    # datasets
    def upload_dataset(
        self, path: str | Path, modality: str, name: str | None = None, format: str | None = None,
        label_column: str | None = None, max_image_side: int | None = 512, *, text_column: str | None = None,
        anchor_column: str | None = None, positive_column: str | None = None,
    ) -> dict:  # fmt: skip
        """Upload a dataset file; a directory of class folders (``DIR/<class>/<image>.png``) is sent as the ZIP an
        image dataset is, made on the fly (its images larger than ``max_image_side`` shrunk as the service reads
        them: :func:`zip_class_folders`), and named after the directory unless ``name`` is given. A text file's
        columns of texts, or of anchors and positives, are named where they are not "text", or "anchor" and
        "positive"."""
        path = Path(path)
        optional = {"name": name or (path.name if path.is_dir() else None), "format": format,
                    "label_column": label_column, "text_column": text_column, "anchor_column": anchor_column,
                    "positive_column": positive_column}  # fmt: skip
        data = {"modality": modality, **{key: value for key, value in optional.items() if value}}
        if path.is_dir():
            if modality != "image":
                raise ValueError(f"{path} is a directory: a directory uploads as an image dataset of class folders "
                                 "(modality image); a text or vectors dataset is one file")  # fmt: skip
            with tempfile.TemporaryFile() as archive:
                zip_class_folders(path, archive, max_image_side)
                archive.seek(0)
                return self._call("POST", "/v1/datasets", data=data, files={"file": (f"{path.name}.zip", archive)})
        with open(path, "rb") as handle:
            return self._call("POST", "/v1/datasets", data=data, files={"file": (path.name, handle)})

    def get_dataset(self, dataset_id: str) -> dict:
        return self._call("GET", f"/v1/datasets/{dataset_id}")

    def list_datasets(self, limit: int = 50, offset: int = 0) -> dict:
        return self._call("GET", "/v1/datasets", params={"limit": limit, "offset": offset})

    def delete_dataset(self, dataset_id: str) -> None:
        self._call("DELETE", f"/v1/datasets/{dataset_id}")

    # jobs
    def submit_job(self, dataset_id: str, config: dict | None = None, name: str = "job",
                   idempotency_key: str | None = None, start_from: str | None = None,
                   start_version: int | None = None) -> dict:  # fmt: skip
        """Submit a training job; a config without ``data.modality`` (or none: every default) takes the dataset's.

        ``start_from``: the name of a registered model whose weights (``start_version``, by default its newest) the
        job starts from; the config's model and head sections default to that model's."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"dataset_id": dataset_id, "name": name, "config": {} if config is None else config}
        if start_from is not None:
            body["start_from"] = {"model": start_from, "version": start_version}
        return self._call("POST", "/v1/jobs", json=body, headers=headers)

    def list_jobs(self, status: str | None = None, limit: int = 50, offset: int = 0) -> dict:
        params = {"limit": limit, "offset": offset, **({"status": status} if status else {})}
        return self._call("GET", "/v1/jobs", params=params)

    def get_job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def resume_job(self, job_id: str) -> dict:
        """Queue a cancelled or failed job again: it goes on from its last checkpoint."""
        return self._call("POST", f"/v1/jobs/{job_id}/resume")

    def delete_job(self, job_id: str) -> None:
        """Delete a finished job with its metrics, events and checkpoints."""
        self._call("DELETE", f"/v1/jobs/{job_id}")

    def job_metrics(self, job_id: str, max_points: int | None = None) -> dict:
        """Each metric's series, in full, or thinned to at most ``max_points`` recorded points (every k-th and the
        last)."""
        params = {} if max_points is None else {"max_points": max_points}
        return self._call("GET", f"/v1/jobs/{job_id}/metrics", params=params)["series"]

    def job_checkpoints(self, job_id: str) -> list[dict]:
        return self._call("GET", f"/v1/jobs/{job_id}/checkpoints")

    def job_events(self, job_id: str) -> list[dict]:
        return self._call("GET", f"/v1/jobs/{job_id}/events")

    def wait(self, job_id: str, poll_s: float = 1.0, timeout_s: float | None = None,
             on_update: Callable[[dict], None] | None = None, outage_s: float = 600.0) -> dict:  # fmt: skip
        """Poll until the job ends; ``on_update`` sees every poll.

        The job trains on whether or not the API answers, so once a poll has been answered, one that finds the
        service away (no answer, or a 502, 503 or 504: the API restarting, its database down) is sent again after
        the answer's Retry-After or ``poll_s``, until the service has been away ``outage_s`` in a row; then its
        error is raised. The first poll's error is raised at once (most likely a wrong URL or a service not up)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        answered, away_since = False, None
        while True:
            try:
                job = self.get_job(job_id)
            except (httpx.TransportError, ApiError) as error:
                if not answered or (isinstance(error, ApiError) and error.status not in AWAY):
                    raise
                away_since = away_since or time.monotonic()
                if time.monotonic() - away_since > outage_s:
                    raise
                status = "unknown (the service is away)"
                pause = max(poll_s, getattr(error, "retry_after", None) or 0.0)
            else:
                answered, away_since, status, pause = True, None, job["status"], poll_s
                if on_update:
                    on_update(job)
                if status in TERMINAL:
                    return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status} after {timeout_s} s")
            time.sleep(pause)

    # models
    def register_model(self, job_id: str, name: str, checkpoint: str = "last") -> dict:
        return self._call("POST", "/v1/models", json={"job_id": job_id, "name": name, "checkpoint": checkpoint})

    def deploy(self, name: str, version: int | None = None, precision: str | None = None) -> dict:
        """Serve ``version`` of ``name`` (the newest by default) at ``precision`` ("fp32", "bf16"; default: the
        server's)."""
        body = {key: value for key, value in (("version", version), ("precision", precision)) if value is not None}
        return self._call("POST", f"/v1/models/{name}/deploy", json=body or None)

    def undeploy(self, name: str) -> list[dict]:
        return self._call("POST", f"/v1/models/{name}/undeploy")

    def list_models(self) -> list[dict]:
        """One entry per model name (``id``), with its ``versions`` and ``deployed_version``."""
        return self._call("GET", "/v1/models")["data"]

    def get_model(self, name: str) -> dict:
        return self._call("GET", f"/v1/models/{name}")

    def download_model(self, name: str, directory: str | Path, version: int | None = None) -> Path:
        """Save ``version`` of ``name`` (the newest by default) as ``directory/model.safetensors``; then
        ``core.inference.Embedder(directory)`` embeds with it offline. The file's path."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        params = {"version": version} if version is not None else None
        with self.http.stream("GET", f"/v1/models/{name}/weights", params=params) as response:
            if response.status_code >= 400:
                response.read()
                self._raise(response)
            partial = target / f"{WEIGHTS_FILE}.part"
            try:
                with open(partial, "wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
            except BaseException:
                partial.unlink(missing_ok=True)  # an interrupted download leaves no file behind
                raise
        return partial.replace(target / WEIGHTS_FILE)

    def delete_model(self, name: str, version: int | None = None) -> dict:
        """Delete ``version`` of ``name``, or every version (none of them deployed); the answer names them."""
        return self._call("DELETE", f"/v1/models/{name}", params={"version": version} if version is not None else None)

    # embeddings
    def embed(self, model: str, inputs: list[Any] | str | np.ndarray, dimensions: int | None = None,
              batch_size: int = 256, max_request_bytes: int = 8 << 20) -> np.ndarray:  # fmt: skip
        """(n, d) float32 embeddings, one row per input in order (sent as base64 float32, as OpenAI's client does).

        ``inputs``: texts, base64 images, or a vector model's rows (lists, or an (n, features) array). They go
        at most ``batch_size`` to a request (the service takes at most ``EMBEDTRAIN_EMBED_MAX_INPUTS``, 2048 by
        default, in one) and at most ``max_request_bytes`` of them, an input larger than that alone: the service's
        bodies are at most ``EMBEDTRAIN_MAX_BODY_BYTES`` (16 MiB by default), which a dozen photos in base64 fill.
        An error answer for a later request names the inputs it held.
        """
        if isinstance(inputs, np.ndarray):  # JSON has no arrays of its own: sent as nested lists
            inputs = inputs.tolist()
        if isinstance(inputs, str):
            return self._embed(model, inputs, dimensions)
        batches = list(_batches(inputs, batch_size, max_request_bytes))
        if len(batches) == 1:
            return self._embed(model, inputs, dimensions)
        parts = []
        for start, stop in batches:
            try:
                parts.append(self._embed(model, inputs[start:stop], dimensions))
            except ApiError as error:
                where = f" (in the request of inputs {start}-{stop - 1}, counted from 0 there)"
                raise ApiError(error.status, error.message + where, error.field, details=error.details) from None
        return np.concatenate(parts)

    def _embed(self, model: str, inputs: list[Any] | str, dimensions: int | None) -> np.ndarray:
        body = {"model": model, "input": inputs, "encoding_format": "base64",
                **({"dimensions": dimensions} if dimensions is not None else {})}  # fmt: skip
        data = self._call("POST", "/v1/embeddings", json=body)["data"]
        return np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in data])

    # keys
    def create_key(self, owner: str, name: str = "default", admin: bool = False) -> dict:
        return self._call("POST", "/v1/keys", json={"owner": owner, "name": name, "admin": admin})

    def list_keys(self) -> list[dict]:
        return self._call("GET", "/v1/keys")

    def revoke_key(self, key_id: str) -> dict:
        return self._call("DELETE", f"/v1/keys/{key_id}")
