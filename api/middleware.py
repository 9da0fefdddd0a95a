"""Request context as a plain ASGI middleware: request id, body-size limit, one JSON log line per request.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware wraps every request in
extra tasks and streams, a measurable share of a small request's cost (bench/api.py).
"""

from __future__ import annotations

import json
import logging
import os
import time

from starlette.exceptions import HTTPException

from api.errors import error_body
from api.metrics import Metrics
from core.store.logs import request_id_var
from core.store.settings import Settings

log = logging.getLogger("embedtrain.api")


class RequestContext:
    """Tags each request with an id (``X-Request-ID`` in and out), refuses oversized bodies (by their
    ``Content-Length``, or as they arrive when they have none), logs it."""

    def __init__(self, app, settings: Settings, metrics: Metrics) -> None:  # noqa: ANN001 - an ASGI app
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = (headers.get(b"x-request-id", b"").decode("latin-1") or os.urandom(16).hex())[:64]
        scope.setdefault("state", {})["request_id"] = request_id
        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            await _answer(send, 400, error_body(400, "invalid Content-Length header"), request_id)
            return
        upload = headers.get(b"content-type", b"").startswith(b"multipart/")
        limit = self.settings.max_upload_bytes + (1 << 20) if upload else self.settings.max_body_bytes
        if length > limit:
            await _answer(send, 413, error_body(413, f"request body larger than {limit} bytes"), request_id)
            return
        status = 500
        start = time.perf_counter()
        received, too_large = 0, False

        async def receive_capped():  # noqa: ANN202
            # a body sent without Content-Length (chunked) is held to the same limit as it arrives
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise HTTPException(413)  # FastAPI passes it through its body parsing; answered below
            return message

        async def send_with_id(message) -> None:  # noqa: ANN001
            nonlocal status
            if too_large:  # whatever the app made of the cut-off body, the client learns why it was refused
                if message["type"] == "http.response.start":
                    status = 413
                    await _answer(send, 413, error_body(413, f"request body larger than {limit} bytes"), request_id)
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive_capped, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # the template, never the raw path
            self.metrics.observe_request(scope["method"], route, status, time.perf_counter() - start)
            if log.isEnabledFor(logging.INFO):
                log.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status,
                                           "duration_ms": round((time.perf_counter() - start) * 1000, 2)})  # fmt: skip
            request_id_var.reset(token)


async def _answer(send, status: int, body: dict, request_id: str) -> None:  # noqa: ANN001
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"x-request-id", request_id.encode("latin-1"))]})  # fmt: skip
    await send({"type": "http.response.body", "body": payload})
