"""Liveness and readiness (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from api.deps import PrincipalDep, SettingsDep
from api.errors import ERROR_RESPONSES, Forbidden
from core.store.broker import client
from core.store.db import get_engine
from core.store.schema import schema_problem

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Answer while the process is alive."""
    return {"status": "ok"}


@router.get("/metrics", response_class=Response, tags=["operators"],
            responses={200: {"content": {"text/plain": {}}}, **ERROR_RESPONSES})  # fmt: skip
def metrics(request: Request, principal: PrincipalDep) -> Response:
    """Prometheus metrics (admin key: they span every tenant)."""
    if not principal.is_admin:
        raise Forbidden("the metrics span every tenant: they need an admin key")
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz")
def readyz(settings: SettingsDep) -> JSONResponse:
    """Check that the database answers and holds this version's schema (its Alembic revision), and that the broker
    answers."""
    checks: dict[str, str] = {}
    try:
        with get_engine(settings).connect() as connection:
            connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
            checks["schema"] = schema_problem(connection) or "ok"
    except Exception as error:  # any failure means not ready; the body says which and why
        checks.setdefault("database", f"unavailable: {type(error).__name__}")
        checks.setdefault("schema", f"unknown: {type(error).__name__}")
    try:
        with client(settings).connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as error:  # same: reported, not swallowed
        checks["broker"] = f"unavailable: {type(error).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503)
