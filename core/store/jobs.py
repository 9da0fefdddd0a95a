"""Job state in the database, the queue of record. Functions take ``session`` and never commit.

States: ``queued -> running -> succeeded | failed | cancelled``; a running job whose lease expired goes back
to ``queued`` (or to ``failed`` after ``max_attempts`` deliveries), and a ``cancelled`` or ``failed`` one goes back
to ``queued`` when its owner resumes it (:func:`reopen`). A worker owns a job while it holds an
unexpired lease; claiming is one conditional UPDATE, so two deliveries of the same message never run one job
twice at once.

Sweeper rule (documented in the README):

* ``running`` with an expired lease: re-queued and sent again while ``attempts < max_attempts``, else
  ``failed`` ("worker lost"); if a cancel was requested it becomes ``cancelled``.
* ``queued`` and not picked up within ``requeue_after_s`` of its last dispatch: sent again (covers a broker
  that lost its messages, e.g. a restarted Redis without persistence); the first time, a ``waiting`` event says so
  and names the queue (its workers all busy, or none consuming it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.store.tables import Checkpoint, Job, JobEvent, Metric, ModelVersion, utcnow
from core.train.callbacks import checkpoint_score

TERMINAL = ("succeeded", "failed", "cancelled")
# Metric points a statement writes: 5 parameters each, within PostgreSQL's 65,535 and SQLite's 32,766 a statement
METRIC_ROWS_PER_INSERT = 2000


def add_event(session: Session, job_id: str, kind: str, message: str = "") -> None:
    """Append to the job's event log."""
    session.add(JobEvent(job_id=job_id, kind=kind, message=message))


def claim(session: Session, job_id: str, worker: str, lease_s: float) -> bool:
    """Take the job if it is queued, or running under an expired lease; True when this worker now owns it."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            or_(Job.status == "queued", and_(Job.status == "running", Job.lease_expires_at < now)),
        )
        .values(
            status="running",
            worker=worker,
            lease_expires_at=now + timedelta(seconds=lease_s),
            heartbeat_at=now,
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, now),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    job = session.get(Job, job_id, populate_existing=True)
    add_event(session, job_id, "running", f"attempt {job.attempts} started on {worker}")
    return True


@dataclass(frozen=True)
class Lease:
    """What a heartbeat learns: whether the lease is still ours, and whether a cancel was asked for."""

    held: bool
    cancel_requested: bool


def renew(session: Session, job_id: str, worker: str, lease_s: float) -> Lease:
    """Extend this worker's lease on a running job."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
        .values(lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return Lease(held=result.rowcount == 1, cancel_requested=bool(cancel))


def record_progress(
    session: Session, job_id: str, worker: str, fields: dict[str, Any], metrics: list[tuple[str, int, int, float]]
) -> None:
    """Write progress fields and metric points ``(name, step, epoch, value)``; a repeated step overwrites."""
    if fields:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.worker == worker)
            .values(**fields, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    for start in range(0, len(metrics), METRIC_ROWS_PER_INSERT):  # a fast run, or one the database was away from,
        chunk = metrics[start : start + METRIC_ROWS_PER_INSERT]  # has more points pending than one statement takes
        statement = dialect.insert(Metric).values(
            [dict(job_id=job_id, name=n, step=s, epoch=e, value=v) for n, s, e, v in chunk]
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["job_id", "name", "step"],
                set_={"value": statement.excluded.value, "epoch": statement.excluded.epoch},
            )
        )


def record_checkpoint(
    session: Session, job_id: str, step: int, epoch: int, storage_key: str, metrics: dict[str, float]
) -> None:
    """Record a checkpoint written to storage (one row per step; a re-run of the step replaces it)."""
    existing = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step))
    if existing is None:
        session.add(Checkpoint(job_id=job_id, step=step, epoch=epoch, storage_key=storage_key, metrics=metrics))
    else:
        existing.storage_key, existing.metrics, existing.epoch = storage_key, metrics, epoch


def best_checkpoint(rows: list[Checkpoint]) -> Checkpoint:
    """The best of a job's checkpoints (``rows`` in step order) by :func:`~core.train.callbacks.checkpoint_score`
    (the highest k-NN accuracy where labels exist, else the lowest held-out loss; ties to the later step), else the
    last."""
    scored = [c for c in rows if checkpoint_score(c.metrics) is not None]
    return max(scored, key=lambda c: (checkpoint_score(c.metrics), c.step)) if scored else rows[-1]


def prune_checkpoints(session: Session, job_id: str, keep: int) -> list[str]:
    """Delete the job's checkpoint rows but the newest ``keep``, the best, those a model version was registered
    from and those a job not yet ended starts from; the storage keys of the deleted ones, for the caller to remove
    once this commits.

    The rows are locked first, so a registration or a submission reading one of them (``FOR SHARE``) either finishes
    before this looks for model versions and jobs, or finds the row gone.
    """
    rows = list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
                                .with_for_update()))  # fmt: skip
    if len(rows) <= keep:
        return []
    registered = set(session.scalars(select(ModelVersion.checkpoint_id).where(ModelVersion.job_id == job_id)))
    kept = {c.id for c in rows[-keep:]} | {best_checkpoint(rows).id} | registered
    kept |= {checkpoint_id for _, checkpoint_id in jobs_starting_from(session, rows)}
    doomed = [c for c in rows if c.id not in kept]
    for checkpoint in doomed:
        session.delete(checkpoint)
    return [c.storage_key for c in doomed]


def jobs_starting_from(session: Session, checkpoints: list[Checkpoint]) -> list[tuple[str, str]]:
    """The jobs not yet ended that start from one of ``checkpoints``, as (job id, checkpoint id): each reads its
    checkpoint's weights when it starts, and again when it is retried before its own first checkpoint."""
    query = select(Job.id, Job.start_checkpoint_id).where(Job.start_checkpoint_id.in_([c.id for c in checkpoints]),
                                                          Job.status.not_in(TERMINAL))  # fmt: skip
    return [(job_id, checkpoint_id) for job_id, checkpoint_id in session.execute(query.order_by(Job.id))]


def finish(session: Session, job_id: str, worker: str, status: str, error: str | None = None) -> bool:
    """End a job this worker owns; False if it lost the job in the meantime."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
        .values(status=status, error=error, finished_at=now, updated_at=now, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        add_event(session, job_id, status, error or "")
    return result.rowcount == 1


def hand_back(session: Session, job_id: str, worker: str, why: str) -> bool:
    """Put a job this worker owns back in the queue, as the worker shuts down; False if it lost the job meanwhile.

    The attempt does not count against ``max_attempts`` (the job did nothing wrong). With ``dispatched_at`` cleared,
    the next sweep of any worker, this one's successor included, sends it again; the attempt that takes it resumes
    from its last checkpoint.
    """
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
        .values(status="queued", attempts=Job.attempts - 1, lease_expires_at=None, dispatched_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        add_event(session, job_id, "requeued", f"{why}; handed back to the queue (the attempt does not count)")
    return result.rowcount == 1


def request_cancel(session: Session, job: Job) -> None:
    """Cancel a queued job now; ask a running one to stop at its next step (it keeps its last checkpoint)."""
    if job.status in TERMINAL:
        return
    now = utcnow()
    job.cancel_requested = True
    job.updated_at = now
    if job.status == "queued":
        job.status, job.finished_at = "cancelled", now
        add_event(session, job.id, "cancelled", "cancelled before it started")
    else:
        add_event(session, job.id, "cancel_requested", "stop requested; the job stops at its worker's next heartbeat "
                  "(every EMBEDTRAIN_HEARTBEAT_S seconds) and keeps its last checkpoint")  # fmt: skip


def reopen(session: Session, job: Job, message: str) -> None:
    """Queue a cancelled or failed job again, with ``max_attempts`` tries anew: the attempt that takes it goes on
    from its last complete checkpoint (weights, optimiser, schedule and step), as a retried job does."""
    job.status, job.cancel_requested, job.error, job.attempts = "queued", False, None, 0
    job.finished_at = job.lease_expires_at = job.dispatched_at = None
    job.updated_at = utcnow()
    add_event(session, job.id, "resume_requested", message)


def mark_dispatched(session: Session, job_id: str) -> None:
    """Note when the job's message was (re)sent."""
    session.execute(
        update(Job).where(Job.id == job_id).values(dispatched_at=utcnow()).execution_options(synchronize_session=False)
    )


def sweep(session: Session, max_attempts: int, requeue_after_s: float, now: datetime | None = None) -> list[Job]:
    """Apply the sweeper rule; returns the jobs that must be sent to their queue again."""
    now = now or utcnow()
    resend: list[Job] = []
    stale = session.scalars(
        select(Job).where(Job.status == "running", Job.lease_expires_at < now).with_for_update(skip_locked=True)
    ).all()
    for job in stale:
        lost = (
            f"worker {job.worker} stopped renewing its lease (last heartbeat {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)"
        )
        job.updated_at = now
        if job.cancel_requested:
            job.status, job.finished_at = "cancelled", now
            add_event(session, job.id, "cancelled", f"{lost}; it had been asked to cancel")
        elif job.attempts >= max_attempts:
            job.status, job.finished_at = "failed", now
            job.error = (f"{lost}; gave up after {job.attempts} attempts (max_attempts={max_attempts}), each ended so: "
                         "the process running it died or hung. Running out of memory is the usual cause (a smaller "
                         "train.batch_size helps, or model.max_length for text); the worker's log says")  # fmt: skip
            add_event(session, job.id, "failed", job.error)
        else:
            job.status = "queued"
            add_event(
                session, job.id, "requeued", f"{lost}; re-queued for attempt {job.attempts + 1} of {max_attempts}"
            )
            resend.append(job)
    overdue = now - timedelta(seconds=requeue_after_s)
    unpicked = session.scalars(
        select(Job)
        .where(Job.status == "queued", or_(Job.dispatched_at.is_(None), Job.dispatched_at < overdue))
        .with_for_update(skip_locked=True)
    )
    waiting = [job for job in unpicked if job not in resend]  # the stale jobs re-queued above are queued now too
    _say_once_why_waiting(session, [job for job in waiting if job.dispatched_at is not None], requeue_after_s)
    return resend + waiting


def _say_once_why_waiting(session: Session, jobs: list[Job], requeue_after_s: float) -> None:
    """A ``waiting`` event for each job sent to its queue and not picked up since, the first time only: every
    worker of the queue may be busy, or none consumes it (a job for the ``gpu`` queue where no GPU worker runs)."""
    if not jobs:  # the usual sweep: no read of the events
        return
    told = set(session.scalars(select(JobEvent.job_id).where(JobEvent.job_id.in_([job.id for job in jobs]),
                                                             JobEvent.kind == "waiting")))  # fmt: skip
    for job in jobs:
        if job.id not in told:
            add_event(session, job.id, "waiting", f"not picked up within {requeue_after_s:g} s of being sent to "
                      f"queue {job.queue!r}; sent again, and again every {requeue_after_s:g} s until a worker takes "
                      "it. Every worker of that queue may be busy, or none consumes it: train.device 'cuda' needs a "
                      "GPU worker (its queue is 'gpu'), 'cpu' a worker of the 'cpu' queue")  # fmt: skip
