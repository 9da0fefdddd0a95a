"""FastAPI dependencies as ``Annotated`` aliases: settings, storage, a session per request, the caller."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Annotated, TypeVar

from anyio import to_thread
from fastapi import Depends, Request, params
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.errors import Invalid, Unauthorized
from core.store.db import session_factory
from core.store.keys import Principal
from core.store.keys import authenticate as authenticate_key
from core.store.settings import Settings
from core.store.storage import Storage


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_storage(request: Request) -> Storage:
    return request.app.state.storage


async def get_session(settings: Annotated[Settings, Depends(get_app_settings)]) -> AsyncIterator[Session]:
    """A session for the request; the service function commits.

    Async, so that FastAPI opens and closes it on the event loop rather than handing each step to a thread (a sync
    dependency with ``yield`` costs two hand-offs besides the route's own). Opening does no I/O: the connection is
    checked out at the first statement, in the route's thread. Closing does I/O (a rollback) only while a
    transaction is open, and then runs in a thread too.
    """
    session = session_factory(settings)()
    try:
        yield session
    finally:
        if session.in_transaction():
            await to_thread.run_sync(session.close)
        else:
            session.close()


T = TypeVar("T")


async def run_read(request: Request, function: Callable[..., T], *args: object) -> T:
    """Run a hot read (check out a connection, query, return it) in one of the process's few read threads
    (:mod:`api.threads`)."""
    return await request.app.state.read_threads.run(function, *args)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer et_...`")
# the OpenAPI security requirement of a route that calls authenticate() itself (api.plain_route)
BEARER_SECURITY = [{_bearer.scheme_name: []}]


def _authenticate(settings: Settings, key: str) -> Principal | None:
    with session_factory(settings)() as session:
        return authenticate_key(session, key)


async def authenticate(request: Request) -> Principal:
    """The caller named by the request's ``Authorization: Bearer <key>`` header; 401 without a valid key.

    A valid key is remembered for ``auth_cache_s`` (failures never are). The check uses its own short session:
    the connection is back in the pool before the route runs, so a request that waits (an embedding in the
    batcher) holds no connection.
    """
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    digest = hashlib.sha256(key.encode()).hexdigest()
    principal = await request.app.state.auth_cache.get(digest, partial(_authenticate, request.app.state.settings, key))
    if principal is None:
        raise Unauthorized("invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    return principal


async def get_principal(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller of an authenticated route (the ``_bearer`` dependency puts the scheme in the OpenAPI schema)."""
    return await authenticate(request)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _query_names(dependant) -> set[str]:  # noqa: ANN001 - fastapi.dependencies.models.Dependant
    """The query parameters a route reads, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def refuse_unknown_query(request: Request) -> None:
    """A query parameter the route does not read is refused with a 422 naming it and the ones it reads, rather than
    ignored: ``DELETE /v1/models/NAME?versoin=1`` deleted every version, ``?checkpoint=ID`` (for ``checkpoint_id``)
    drew the latest checkpoint, ``?state=running`` listed every job."""
    if not request.query_params:
        return
    route = request.scope["route"]
    known = _query_names(route.dependant)
    unknown = next((name for name in request.query_params if name not in known), None)
    if unknown is not None:
        takes = ", ".join(sorted(known)) if known else "none"
        raise Invalid(f"unknown query parameter {unknown!r}; {request.method} {route.path} takes: {takes}",
                      field=unknown)  # fmt: skip


async def refuse_unknown_form(request: Request) -> None:
    """On a route that reads a form (the dataset upload), a field it does not read, or one given twice, is refused
    with a 422 naming it, rather than ignored: ``lable_column=category`` stored a file without its labels, and of two
    ``file`` parts one was stored and the other dropped. The form is the one FastAPI parsed for the route."""
    route = request.scope["route"]
    body = getattr(route, "body_field", None)
    if body is None or not isinstance(body.field_info, params.Form):
        return
    known = {param.alias for param in route.dependant.body_params}
    counts: dict[str, int] = {}
    for name, _ in (await request.form()).multi_items():
        if name not in known:
            takes = ", ".join(sorted(known))
            raise Invalid(f"unknown form field {name!r}; {request.method} {route.path} takes: {takes}", field=name)
        counts[name] = counts.get(name, 0) + 1
    repeated = next((name for name, count in counts.items() if count > 1), None)
    if repeated is not None:
        raise Invalid(f"form field {repeated!r} given {counts[repeated]} times; send it once (one file an upload)",
                      field=repeated)  # fmt: skip
