"""Routes served as plain Starlette endpoints, yet documented in the OpenAPI schema like every other route.

FastAPI's request handling (solving the dependency tree, parsing the body with ``json`` and validating the
result, validating the returned model once more before serialising it) costs event-loop CPU on every request.
On /v1/embeddings that event loop shares the machine's cores with the forward passes, so each of its
milliseconds is taken from the model: on the 2-core development VM the embeddings route spent 0.53 ms of
event-loop CPU per request through FastAPI's handler and 0.38 ms as a :class:`PlainRoute` (bench/serve.py,
bench/RESULTS.md "Serving").

A :class:`PlainRoute`'s endpoint takes the :class:`~starlette.requests.Request` and returns a
:class:`~starlette.responses.Response`; it does the few steps it needs itself (:func:`api.deps.authenticate`,
:func:`parse_body` with pydantic's Rust parser, its own serialisation). What it raises goes through the app's one
error mapping (:mod:`api.errors`), as from any route. Its OpenAPI entry comes from the decorator's
``response_model`` and :func:`plain_openapi`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from api.errors import body_invalid

M = TypeVar("M", bound=BaseModel)


class PlainRoute(APIRoute):
    """An ``APIRoute`` whose endpoint is the whole handler: ``endpoint(request) -> Response``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


def plain_openapi(security: list[dict[str, list[str]]], body: type[BaseModel] | None = None,
                  path: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """``openapi_extra`` for a plain route that checks ``security`` itself, reads a required JSON ``body`` of that
    model if given, and takes the string path parameters ``path`` (FastAPI documents neither: its endpoint takes only
    the request)."""
    extra: dict[str, Any] = {"security": security}
    if body is not None:
        schema = body.model_json_schema()
        if "$defs" in schema:
            raise ValueError(f"{body.__name__} nests models, whose schemas would have to go into the components")
        extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if path:
        extra["parameters"] = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                               for name in path]  # fmt: skip
    return extra


async def parse_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; otherwise a :class:`RequestValidationError` (a 422 naming the field)."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as error:
        # located under "body" as FastAPI does, so the error mapping names the field the same way
        problems = _one_per_union(model, error.errors(include_url=False, include_context=False, include_input=False))
        raise body_invalid(problems) from None


def _one_per_union(model: type[BaseModel], problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``problems`` with the errors of each union field that fit none of its members made one, saying what the field
    takes (its description), instead of one error per member ("input.str: Input should be a valid string", ...)."""
    out: list[dict[str, Any]] = []
    merged: set[str] = set()
    for problem in problems:
        loc = problem["loc"]
        member = len(loc) > 1 and isinstance(loc[1], str)  # pydantic tags a member's errors with its type
        field = model.model_fields.get(loc[0]) if member else None
        if field is None or get_origin(field.annotation) not in (Union, UnionType):
            out.append(problem)
        elif loc[0] not in merged:
            merged.add(loc[0])
            what = field.description or " or ".join(str(arg) for arg in get_args(field.annotation))
            out.append({"type": "union", "loc": (loc[0],), "msg": f"fits none of the shapes accepted. {what}"})
    return out
