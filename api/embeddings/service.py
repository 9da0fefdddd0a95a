"""Embedding rules: resolve the deployed model, check and convert inputs, batch, format like OpenAI."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np
import orjson
import torch
from starlette.concurrency import run_in_threadpool

from api.embeddings.cache import ModelCache
from api.embeddings.schemas import EmbeddingRequest
from api.errors import Invalid
from api.models.service import deployed_version
from api.ttlcache import TTLCache
from core.data.readers import IMAGE_FORMATS, DatasetError, ReadLimits, decode_image
from core.inference import Embedder, Precision, model_view, with_channels
from core.store.db import session_factory
from core.store.keys import Principal
from core.store.settings import Settings
from core.store.storage import Storage


def _texts(raw, settings: Settings) -> list[str]:  # noqa: ANN001 - the request's input union
    texts = [raw] if isinstance(raw, str) else raw
    if not texts or not all(isinstance(t, str) for t in texts):
        raise Invalid("this is a text model: input must be a string or a list of strings", field="input")
    for index, text in enumerate(texts):
        if not text:
            raise Invalid(f"input[{index}] is an empty string", field="input")
        if len(text) > settings.embed_max_chars:
            raise Invalid(f"input[{index}] is longer than {settings.embed_max_chars} characters", field="input")
    return texts


def _vectors(raw, features: int) -> np.ndarray:  # noqa: ANN001
    if isinstance(raw, str) or not raw or not all(isinstance(row, list) for row in raw):
        raise Invalid("this is a vector model: input must be a list of numeric lists", field="input")
    for index, row in enumerate(raw):
        if len(row) != features:
            values = f"{len(row)} value{'s' * (len(row) != 1)}"
            raise Invalid(f"input[{index}] has {values}; the model takes {features}", field="input")
    with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf, refused below
        vectors = np.asarray(raw, dtype=np.float32)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0])
        raise Invalid(f"input[{index}] holds NaN, infinite values or values beyond float32's range (±3.4e38)",
                      field="input")  # fmt: skip
    return vectors


def _images(raw, embedder: Embedder, settings: Settings) -> np.ndarray:  # noqa: ANN001
    if isinstance(raw, str):
        raw = [raw]
    if not raw or not all(isinstance(item, str) for item in raw):
        raise Invalid(f"this is an image model: input must be a list of base64 images ({IMAGE_FORMATS})", field="input")
    size = embedder.config.model.image_size
    channels = embedder.spec.channels
    limits = ReadLimits(max_image_pixels=settings.max_image_pixels, max_image_side=settings.max_image_side)
    out = np.empty((len(raw), channels, size, size), dtype=np.float32)
    for index, item in enumerate(raw):
        try:
            data = base64.b64decode(item.split(",", 1)[-1], validate=True)  # data: URLs are accepted too
            image = decode_image(data, limits, f"input[{index}]")
        except (binascii.Error, ValueError) as error:
            message = str(error) if isinstance(error, DatasetError) else (
                f"input[{index}] is not valid base64; this is an image model: input must be base64 images "
                f"({IMAGE_FORMATS}; `embedtrain embed --image FILE`)")  # fmt: skip
            raise Invalid(message, field="input") from None
        tensor = with_channels(torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255.0)[None], channels)
        out[index] = model_view(tensor, embedder.spec, size)[0].numpy()
    return out


def prepare_inputs(body: EmbeddingRequest, embedder: Embedder, settings: Settings) -> list:
    """Checked model inputs."""
    if embedder.modality == "text" and body.input and isinstance(body.input[0], int | list):
        raise Invalid(
            "this is a text model: input must be a string or a list of strings; arrays of token ids are not "
            "accepted, since the model reads text with its own tokenizer (LangChain's OpenAIEmbeddings sends them "
            "unless check_embedding_ctx_length=False)",
            field="input",
        )
    count = 1 if isinstance(body.input, str) else len(body.input)
    if count == 0:
        raise Invalid("input is empty: send at least one item to embed", field="input")
    if count > settings.embed_max_inputs:
        raise Invalid(f"input has {count} items; at most {settings.embed_max_inputs} per request", field="input")
    if embedder.modality == "text":
        return _texts(body.input, settings)
    if embedder.modality == "vectors":
        return list(_vectors(body.input, embedder.spec.features))
    return list(_images(body.input, embedder, settings))


def shortened(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """The first ``dimensions`` of each vector, L2-normalised again (OpenAI's ``dimensions``, as for Matryoshka
    embeddings)."""
    head = vectors[:, :dimensions]
    return head / np.maximum(np.linalg.norm(head, axis=1, keepdims=True), 1e-12)


def encode(vector: np.ndarray, fmt: str) -> np.ndarray | str:
    """The float32 vector (written as a list of numbers), or OpenAI's base64 of little-endian float32."""
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector


def render(vectors: np.ndarray, fmt: str, model: str, usage: int) -> bytes:
    """The JSON of an :class:`~api.embeddings.schemas.EmbeddingResponse`, written by orjson.

    orjson writes each float32 in its shortest round-trip form (``0.07481362``, where the float64 of the same value
    takes 17 digits): the body is ~40% smaller, and writing it took 13 us instead of 43 us for one 384-d vector
    through the pydantic models. The shape is the schema's (tests/api check answers against it).
    """
    data = [{"object": "embedding", "index": i, "embedding": encode(v, fmt)} for i, v in enumerate(vectors)]
    answer = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": usage, "total_tokens": usage}}
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


async def _resolve(body: EmbeddingRequest, principal: Principal, settings: Settings, storage: Storage,
                   lookups: TTLCache) -> tuple[str, Path, Precision]:  # fmt: skip
    """The (version id, checkpoint path, precision) serving ``body.model`` for this caller, cached
    ``model_lookup_cache_s``."""

    def lookup() -> tuple[str, Path, Precision]:
        with session_factory(settings)() as session:
            version, key = deployed_version(session, principal, body.model)
            return version.id, storage.path(key), version.precision or settings.embed_precision

    return await lookups.get((principal.owner, principal.is_admin, body.model), lookup)


async def create_embeddings(
    body: EmbeddingRequest, principal: Principal, settings: Settings, storage: Storage, cache: ModelCache,
    lookups: TTLCache,
) -> bytes:  # fmt: skip
    """Embed the request's inputs with the deployed model it names; the answer's JSON (see :func:`render`)."""
    version_id, checkpoint, precision = await _resolve(body, principal, settings, storage, lookups)
    served = await cache.get(version_id, checkpoint, precision)
    if body.dimensions is not None and body.dimensions > served.embedder.dim:
        raise Invalid(f"dimensions must be at most {served.embedder.dim} for this model", field="dimensions")
    many = not isinstance(body.input, str) and len(body.input) > 64
    if served.embedder.modality == "image" or many:  # real work (decoding, tokenising): off the event loop
        inputs = await run_in_threadpool(prepare_inputs, body, served.embedder, settings)
    else:
        inputs = prepare_inputs(body, served.embedder, settings)
    out, counts = await served.batcher.submit(inputs)
    usage = int(counts.sum())
    if body.dimensions is not None:
        out = shortened(out, body.dimensions)
    return render(out, body.encoding_format, body.model, usage)
