"""Structured JSON logs: a request id on every line, echoed to the client, and no secret ever logged."""

from __future__ import annotations

import io
import json
import logging

from core.store.logs import JsonFormatter


def test_request_logs_are_json_with_request_id_and_no_key(tmp_path, pg_url, redis_url, keys) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.conftest import make_settings

    key = keys.make("logs")
    auth = {"Authorization": f"Bearer {key}"}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("embedtrain")
    with TestClient(create_app(make_settings(tmp_path, pg_url, redis_url, log_level="INFO"))) as client:
        logger.addHandler(handler)
        try:
            response = client.get("/v1/jobs", headers={**auth, "X-Request-ID": "req-123"})
            client.get("/v1/jobs", headers={"Authorization": "Bearer et_000000000000_wrong-secret"})
        finally:
            logger.removeHandler(handler)
    assert response.status_code == 200 and response.headers["X-Request-ID"] == "req-123"
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(e.get("request_id") == "req-123" and e["path"] == "/v1/jobs" and e["status"] == 200 for e in lines)
    assert any(e["status"] == 401 and e.get("request_id") for e in lines)
    assert key not in text and "wrong-secret" not in text and "Bearer" not in text
