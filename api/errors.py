"""Domain errors and the one place that maps them (and database outages) to HTTP responses."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from core.config import field_path
from core.data.readers import DatasetError
from core.store.schema import is_missing_schema_object
from core.store.storage import MissingDatasetFile
from core.train.checkpoint import NO_SPACE, NOT_WRITABLE, CheckpointError

log = logging.getLogger("embedtrain.api")


class ServiceError(Exception):
    """Base of the errors a service function raises for the caller to see."""

    status = 400

    def __init__(self, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.headers = message, field, headers


class Forbidden(ServiceError):
    """What the caller's key may never do (a route whose rule is public, unlike another tenant's rows: 404)."""

    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Invalid(ServiceError):
    status = 422


class TooLarge(ServiceError):
    status = 413


class Unauthorized(ServiceError):
    status = 401


class RateLimited(ServiceError):
    status = 429


class ErrorDetail(BaseModel):
    field: str | None
    message: str


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None
    code: int
    details: list[ErrorDetail] | None = None


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorInfo


ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (401, "Missing, invalid or revoked API key"),
        (403, "The key may not do this (creating keys and the operators' metrics need an admin key)"),
        (404, "Not found, or owned by another tenant"),
        (409, "Conflicts with the current state"),
        (413, "Request or upload too large"),
        (422, "Invalid input; `error.param` names the field"),
        (429, "Rate limit reached; see Retry-After"),
        (503, "Database or broker unavailable; see Retry-After"),
        (507, "The service's storage is full; nothing of the request was kept"),
    )
}


def body_invalid(problems: list[dict], *within: str | int) -> RequestValidationError:
    """pydantic's ``problems`` with a part of the request body (``within`` it, e.g. ``"config"``) as FastAPI's own
    validation error, so that the error mapping names each field as for a body FastAPI validated."""
    return RequestValidationError([{**problem, "loc": ("body", *within, *problem["loc"])} for problem in problems])


def error_body(status: int, message: str, field: str | None = None) -> dict:
    """The JSON error shape of every 4xx/5xx answer (OpenAI-style ``error`` object)."""
    return {"error": {"message": message, "type": _TYPES.get(status, "error"), "param": field, "code": status}}


_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "request_too_large", 422: "invalid_request_error",
          429: "rate_limit_exceeded", 503: "service_unavailable", 507: "insufficient_storage"}  # fmt: skip


def install_error_handlers(app: FastAPI) -> None:
    """Register the mappings: service errors by class, validation errors naming the field, outages as 503."""
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def _http(_: Request, error: HTTPException) -> JSONResponse:
        # Starlette's own answers (no such route, a method the route lacks): the same shape as every error
        return JSONResponse(error_body(error.status_code, str(error.detail)), error.status_code, headers=error.headers)

    @app.exception_handler(ServiceError)
    async def _service(_: Request, error: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(error.status, error.message, error.field), error.status, headers=error.headers)

    @app.exception_handler(MissingDatasetFile)
    async def _missing_file(_: Request, error: MissingDatasetFile) -> JSONResponse:
        # not the request's fault nor the file's: the stored state is broken (as for a checkpoint that cannot load)
        log.error("%s", error)
        return JSONResponse(error_body(409, str(error), "dataset"), 409)

    @app.exception_handler(DatasetError)
    async def _dataset(_: Request, error: DatasetError) -> JSONResponse:
        # a stored dataset that can no longer be read (found late, after its upload was accepted)
        return JSONResponse(error_body(422, f"the dataset {error}", "dataset"), 422)

    @app.exception_handler(CheckpointError)
    async def _checkpoint(_: Request, error: CheckpointError) -> JSONResponse:
        return JSONResponse(error_body(409, str(error), "checkpoint"), 409)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            if item.get("type") == "json_invalid" and len(item.get("loc", ())) == 2:  # FastAPI's: ("body", offset)
                reason = item.get("ctx", {}).get("error", "JSON decode error")
                problems.append({"field": None, "message": f"Invalid JSON: {reason} at character {item['loc'][1]}"})
                continue
            loc = [str(p) for p in item.get("loc", ())]
            if loc and loc[0] in ("body", "query", "path", "header", "cookie"):  # where it came from, not a field
                loc = loc[1:]  # only the first: a field may be called "query" or "path" itself
            loc = field_path(loc)  # config.model.hidden_dim, not config.model.mlp.hidden_dim
            raised = item.get("ctx", {}).get("error") if item.get("type") == "value_error" else None
            message = str(raised) if raised is not None else item.get("msg", "invalid")  # without "Value error, "
            problems.append({"field": ".".join(loc) or None, "message": message})
        first = problems[0] if problems else {"field": None, "message": "invalid request"}
        body = error_body(422, f"{first['field']}: {first['message']}" if first["field"] else first["message"],
                          first["field"])  # fmt: skip
        body["error"]["details"] = problems
        return JSONResponse(body, 422)

    def _schema_behind(error: DBAPIError) -> JSONResponse:
        # a table or column this code reads is missing: the migrations were not run on this database (an operator's
        # step, not the caller's fault nor an outage that passes by itself); /readyz names the revision
        reason = str(error.orig).splitlines()[0]
        log.error("the database's schema is behind this version (%s): run `embedtrain-admin migrate`", reason)
        body = error_body(503, f"the service's database does not have this version's schema ({reason}): an operator "
                          "must run `embedtrain-admin migrate`; GET /readyz says which revision it is at")  # fmt: skip
        return JSONResponse(body, 503, headers={"Retry-After": "30"})

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_down(_: Request, error: Exception) -> JSONResponse:
        if isinstance(error, DBAPIError) and is_missing_schema_object(error):  # SQLite's "no such table"
            return _schema_behind(error)
        if (getattr(getattr(error, "orig", None), "sqlstate", None) or "").startswith("40"):
            # SQLSTATE class 40, transaction rollback: PostgreSQL ended this transaction for another's sake (a
            # deadlock, a serialisation failure); the database is up and the request can be sent again as it is
            log.warning("transaction rolled back by the database: %s", str(error.orig).splitlines()[0])
            body = error_body(409, "the change conflicted with another made at the same moment; send it again")
            return JSONResponse(body, 409, headers={"Retry-After": "1"})
        log.warning("database unavailable: %s", str(error).splitlines()[0])
        body = error_body(503, "the database is unavailable; retry shortly")
        return JSONResponse(body, 503, headers={"Retry-After": "5"})

    @app.exception_handler(OSError)
    async def _storage_error(request: Request, error: OSError) -> JSONResponse:
        # the volume of EMBEDTRAIN_STORAGE_ROOT full, or not writable: the operator's to fix, not the caller's request;
        # what the request was writing (a staged upload) was removed on the way out
        if error.errno in NO_SPACE:
            log.error("storage full: %s", error)
            body = error_body(507, f"the service's storage is full ({error.strerror}); nothing of this request was "
                              "kept: an operator must free space or enlarge the volume of EMBEDTRAIN_STORAGE_ROOT")  # fmt: skip
            return JSONResponse(body, 507)
        root = request.app.state.storage.root
        if error.errno in NOT_WRITABLE and error.filename and Path(error.filename).is_relative_to(root):
            log.error("storage not writable: %s", error)
            body = error_body(503, f"the service cannot write to its storage ({error.strerror}); nothing of this "
                              "request was kept: an operator must make the volume of EMBEDTRAIN_STORAGE_ROOT writable "
                              "by the service's user")  # fmt: skip
            return JSONResponse(body, 503)
        raise error

    @app.exception_handler(DataError)
    async def _unstorable_value(_: Request, error: DataError) -> JSONResponse:
        # the database refused a value of the request (a NUL character, an out-of-range number): bad input
        message = str(error.orig).splitlines()[0] if error.orig else "invalid value"
        return JSONResponse(error_body(422, f"a value in the request cannot be stored: {message}"), 422)

    @app.exception_handler(DBAPIError)
    async def _database_error(_: Request, error: DBAPIError) -> JSONResponse:
        if is_missing_schema_object(error):  # PostgreSQL's undefined table or column
            return _schema_behind(error)
        if error.connection_invalidated:
            return JSONResponse(error_body(503, "the database connection was lost; retry shortly"), 503,
                                headers={"Retry-After": "5"})  # fmt: skip
        raise error
