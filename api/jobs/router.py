"""/v1/jobs: submit, list, read, cancel, resume, delete, metrics, checkpoints, events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status

from api.deps import BEARER_SECURITY, PrincipalDep, SessionDep, SettingsDep, StorageDep, authenticate, run_read
from api.jobs import service
from api.jobs.schemas import (
    CheckpointRead,
    EventRead,
    JobCreate,
    JobMetrics,
    JobPage,
    JobRead,
    JobStatus,
    Projection,
)
from api.plain_route import PlainRoute, plain_openapi

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
# The status poll, the hottest read, is a PlainRoute (api.plain_route): through the app in one process it took
# 0.88-0.91x the CPU of the same poll through FastAPI's dependency solving and response validation (bench/api.py's
# poll_through_app, medians of three runs of 10 alternating pairs, lower in 25 of the 30; bench/RESULTS.md "API
# under load").
polls = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=PlainRoute)


@polls.get("/{job_id}", response_model=JobRead, openapi_extra=plain_openapi(BEARER_SECURITY, path=("job_id",)))
async def get_job(request: Request) -> Response:
    """Read a job's status, progress and latest metrics."""
    principal = await authenticate(request)
    job = await run_read(request, service.read_job, request.app.state.settings, principal,
                         request.path_params["job_id"])  # fmt: skip
    return Response(job.model_dump_json(), media_type="application/json")


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobRead)
def submit_job(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    principal: PrincipalDep,
    body: JobCreate,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> JobRead:
    """Queue a training job."""
    request.app.state.job_limiter.check(principal.key_id, "job submissions")
    job, created = service.submit_job(session, settings, storage, principal, body, idempotency_key,
                                      getattr(request.state, "request_id", None))  # fmt: skip
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return service.to_read(job)


@router.get("", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    principal: PrincipalDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> JobPage:
    """List jobs, optionally of one status."""
    rows, total = service.list_jobs(session, principal, status, limit, offset)
    return JobPage(items=[service.to_read(j) for j in rows], total=total, limit=limit, offset=offset)


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=JobRead)
def cancel_job(session: SessionDep, principal: PrincipalDep, job_id: str) -> JobRead:
    """Cancel a job: a queued one at once; a running one at its worker's next heartbeat (``EMBEDTRAIN_HEARTBEAT_S``,
    2 s by default), keeping its last checkpoint. A cancelled job is returned as it is; one that has succeeded or
    failed is refused with a 409."""
    return service.to_read(service.cancel_job(session, principal, job_id))


@router.post("/{job_id}/resume", status_code=status.HTTP_202_ACCEPTED, response_model=JobRead)
def resume_job(request: Request, session: SessionDep, settings: SettingsDep, principal: PrincipalDep,
               job_id: str) -> JobRead:  # fmt: skip
    """Queue a cancelled or failed job again, with its attempts anew: it goes on from its last checkpoint (weights,
    optimiser, schedule and step), or starts over where it wrote none. A queued or running job is returned as it is
    (409 while it is stopping after a cancel); one that has succeeded is refused with a 409."""
    request.app.state.job_limiter.check(principal.key_id, "job submissions")
    job = service.resume_job(session, settings, principal, job_id, getattr(request.state, "request_id", None))
    return service.to_read(job)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_job(session: SessionDep, storage: StorageDep, principal: PrincipalDep, job_id: str) -> None:
    """Delete a finished job with its metrics, events and checkpoints (files too). A queued or running job must be
    cancelled first, and the model versions registered from it deleted first."""
    service.delete_job(session, storage, principal, job_id)


@router.get("/{job_id}/metrics", response_model=JobMetrics)
def get_metrics(
    session: SessionDep,
    principal: PrincipalDep,
    job_id: str,
    max_points: Annotated[int | None, Query(ge=2, le=1_000_000, description="Thin each series to at most this "
                          "many recorded points: every k-th and the last (a chart needs a few hundred).")] = None,
) -> JobMetrics:  # fmt: skip
    """Every metric's series, in full or thinned to ``max_points``."""
    job = service.owned_job(session, principal, job_id)
    return JobMetrics(job_id=job.id, series=service.metric_series(session, job, max_points))


@router.get("/{job_id}/checkpoints", response_model=list[CheckpointRead])
def get_checkpoints(session: SessionDep, principal: PrincipalDep, job_id: str) -> list[CheckpointRead]:
    """The job's checkpoints, by step."""
    job = service.owned_job(session, principal, job_id)
    return service.checkpoints(session, job)


@router.get("/{job_id}/projection", response_model=Projection)
def get_projection(
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    job_id: str,
    checkpoint_id: str | None = None,
    limit: Annotated[int, Query(ge=2, le=2000)] = 500,
) -> Projection:
    """A 2-D PCA projection of held-out embeddings at a checkpoint, with labels."""
    job = service.owned_job(session, principal, job_id)
    return service.projection(session, storage, settings, job, checkpoint_id, limit)


@router.get("/{job_id}/events", response_model=list[EventRead])
def get_events(session: SessionDep, principal: PrincipalDep, job_id: str) -> list[EventRead]:
    """State changes and errors, in order."""
    job = service.owned_job(session, principal, job_id)
    return [EventRead.model_validate(e) for e in service.events(session, job)]
