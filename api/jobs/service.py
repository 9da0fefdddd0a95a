"""Job rules: submission (committed, then sent by task name), owner-scoped reads, cancellation and resumption."""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from sqlalchemy import Row, bindparam, case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.datasets.service import owned_dataset, record_width
from api.errors import Conflict, Invalid, NotFound
from api.jobs.schemas import CheckpointRead, JobCreate, JobRead, MetricPoint, Progress, Projection, ProjectionPoint
from api.jobs.start import check_start, start_point
from core.config import MAX_VAL_FRACTION, RunConfig
from core.data.readers import Columns, ReadLimits, read_records
from core.data.records import MIN_HELD_OUT, held_out, short_of_a_batch
from core.inference import Embedder
from core.inspect import embed_records, project_2d
from core.store.broker import queue_for, send_train
from core.store.db import read_first
from core.store.jobs import (
    TERMINAL,
    add_event,
    best_checkpoint,
    jobs_starting_from,
    mark_dispatched,
    reopen,
    request_cancel,
)
from core.store.keys import Principal
from core.store.settings import Settings
from core.store.storage import Storage
from core.store.tables import Checkpoint, Dataset, Job, JobEvent, Metric, ModelVersion

log = logging.getLogger("embedtrain.api")


def _check_fits(config: RunConfig, dataset) -> None:  # noqa: ANN001 - a Dataset row
    if dataset.modality != config.data.modality:
        raise Invalid(f"the dataset holds {dataset.modality} but config.data.modality is {config.data.modality!r}",
                      field="config.data.modality")  # fmt: skip
    n_val = held_out(dataset.num_records, config.data.val_fraction)
    if refusal := short_of_a_batch(dataset.num_records - n_val, config.train.batch_size):  # now, not in the worker
        raise Invalid(refusal, field="config.train.batch_size")
    if config.data.val_fraction > 0 and n_val < MIN_HELD_OUT:  # the loop would skip every evaluation without a word
        least = math.ceil((MIN_HELD_OUT - 0.5) / dataset.num_records * 100) / 100
        fix = f"raise it to {least}" if least <= MAX_VAL_FRACTION else "upload more data"
        raise Invalid(f"config.data.val_fraction {config.data.val_fraction} of {dataset.num_records} records holds "
                      f"out {n_val}, and an evaluation needs at least {MIN_HELD_OUT}; {fix}, or set it to 0 to train "
                      "without one", field="config.data.val_fraction")  # fmt: skip
    if config.data.use_labels and not dataset.num_labels:
        raise Invalid("config.data.use_labels is true but the dataset has no labels", field="config.data.use_labels")
    if config.data.use_labels and dataset.num_labels < 2:  # every pair a positive: nothing pushed apart
        raise Invalid("config.data.use_labels is true but the dataset's labels are all one class; supervised "
                      "contrastive training needs two or more", field="config.data.use_labels")  # fmt: skip
    if getattr(config.augment, "mode", None) == "pairs" and not dataset.details.get("paired"):
        raise Invalid("config.augment.mode is 'pairs' but the dataset has no anchor/positive columns",
                      field="config.augment.mode")  # fmt: skip


def _held_out_dataset(session: Session, principal: Principal, config: RunConfig, dataset) -> Dataset | None:  # noqa: ANN001
    """The dataset ``data.val_dataset_id`` names, if it can stand in for the training dataset's held-out records;
    read ``FOR SHARE`` until the job commits, so that its deletion waits, then sees the job (and is refused)."""
    if config.data.val_dataset_id is None:
        return None
    field = "config.data.val_dataset_id"
    held = owned_dataset(session, principal, config.data.val_dataset_id, lock="share", field=field)
    if held.modality != dataset.modality:
        raise Invalid(
            f"the held-out dataset holds {held.modality}; the training dataset {dataset.modality}", field=field
        )
    if record_width(held) != record_width(dataset):
        unit = "features" if dataset.modality == "vectors" else "channels"
        raise Invalid(f"the held-out dataset's records have {record_width(held)} {unit}; the training dataset's "
                      f"{record_width(dataset)}", field=field)  # fmt: skip
    if bool(held.details.get("paired")) != bool(dataset.details.get("paired")):
        paired, plain = ("held-out", "training") if held.details.get("paired") else ("training", "held-out")
        raise Invalid(f"the {paired} dataset holds anchor/positive pairs and the {plain} dataset does not",
                      field=field)  # fmt: skip
    if held.num_records < MIN_HELD_OUT:
        raise Invalid(f"the held-out dataset has {held.num_records} record(s); an evaluation needs at least "
                      f"{MIN_HELD_OUT}", field=field)  # fmt: skip
    return held


def submit_job(
    session: Session, settings: Settings, storage: Storage, principal: Principal, body: JobCreate,
    idempotency_key: str | None, request_id: str | None,
) -> tuple[Job, bool]:  # fmt: skip
    """Create the job and send it to its queue; a repeated Idempotency-Key returns the first job (422 if the
    request differs from the one the key was first used with)."""
    if idempotency_key:
        existing = session.scalar(
            select(Job).where(Job.owner == principal.owner, Job.idempotency_key == idempotency_key)
        )
        if existing is not None:
            return _replayed(session, existing, body), False
    dataset = owned_dataset(session, principal, body.dataset_id, lock="share")  # held until the job is committed
    start = start_point(session, storage, principal, body.start_from, dataset.modality) if body.start_from else None
    base = start.config.model_dump(mode="json") if start else None
    config = body.run_config(dataset.modality, base).for_data(bool(dataset.details.get("paired")))
    _check_fits(config, dataset)
    _held_out_dataset(session, principal, config, dataset)
    if start is not None:
        check_start(config, start, dataset)
    job = Job(owner=principal.owner, name=body.name, dataset_id=dataset.id, config=config.model_dump(mode="json"),
              queue=queue_for(settings, config.train.device), idempotency_key=idempotency_key,
              request_id=request_id, start_checkpoint_id=start.checkpoint.id if start else None,
              start_from=start.record() if start else None)  # fmt: skip
    session.add(job)
    try:
        session.flush()
        add_event(session, job.id, "queued", f"queued on {job.queue}"
                  + (f", to start from {start.name} (checkpoint {start.checkpoint.id})" if start else ""))  # fmt: skip
        session.commit()  # committed before the message exists, so the worker always finds the row
    except IntegrityError:
        session.rollback()  # a concurrent request with the same Idempotency-Key won
        existing = session.scalar(
            select(Job).where(Job.owner == principal.owner, Job.idempotency_key == idempotency_key)
        )
        if existing is None:
            raise
        return _replayed(session, existing, body), False
    _send(session, settings, job, request_id)
    return job, True


def _send(session: Session, settings: Settings, job: Job, request_id: str | None) -> None:
    """Send the committed, queued job to its queue."""
    try:
        send_train(settings, job.id, job.queue, request_id)
        mark_dispatched(session, job.id)
        session.commit()
    except Exception as error:  # the broker is away: the job stays queued and the sweeper sends it later
        session.rollback()
        log.warning("job %s queued but not sent (%s); the sweeper will send it", job.id, type(error).__name__)


def _replayed(session: Session, existing: Job, body: JobCreate) -> Job:
    """The job a repeated Idempotency-Key names, if the request is the one it was first used with. A key reused for
    another request answers 422 (as the IETF draft on the Idempotency-Key header has it), rather than passing off
    the first job as the one asked for."""
    dataset = session.get(Dataset, existing.dataset_id) if existing.dataset_id else None
    paired = [bool(dataset.details.get("paired"))] if dataset is not None else [False, True]  # deleted: either
    started, ref = existing.start_from, body.start_from
    same_start = (started is None and ref is None) or (
        started is not None and ref is not None and started["model"] == ref.model
        and ref.version in (None, started["version"]))  # fmt: skip
    base = existing.config if started else None  # the sections it took from the model, as it took them
    config = body.run_config(existing.config["data"]["modality"], base)  # the dataset's, as when it was submitted
    configs = [config.for_data(p).model_dump(mode="json") for p in paired]
    same = (existing.name == body.name and existing.config in configs and same_start
            and existing.dataset_id in (body.dataset_id, None))  # None: its dataset was deleted since  # fmt: skip
    if not same:
        raise Invalid(f"this Idempotency-Key was used for another request (job {existing.id}); "
                      "use a new key for a new job", field="Idempotency-Key")  # fmt: skip
    return existing


def owned_job(session: Session, principal: Principal, job_id: str, lock: bool = False) -> Job:
    """The job if the caller may see it (its row locked ``FOR UPDATE`` with ``lock``); another owner's answers 404."""
    job = session.get(Job, job_id, with_for_update=lock or None, populate_existing=lock)  # locked: read anew
    if job is None or (job.owner != principal.owner and not principal.is_admin):
        raise NotFound(f"job {job_id} not found", field="job_id")
    return job


JOB_BY_ID = select(Job.__table__).where(Job.id == bindparam("job_id"))  # built once (core.store.db.read_first)


def read_job(settings: Settings, principal: Principal, job_id: str) -> JobRead:
    """The status poll, the hottest read: one autocommit Core statement, in the caller's thread."""
    job = read_first(settings, JOB_BY_ID, {"job_id": job_id})
    if job is None or (job.owner != principal.owner and not principal.is_admin):
        raise NotFound(f"job {job_id} not found", field="job_id")
    return to_read(job)


def list_jobs(
    session: Session, principal: Principal, status: str | None, limit: int, offset: int
) -> tuple[list[Job], int]:
    """The caller's jobs, newest first, optionally of one status."""
    query = select(Job)
    if not principal.is_admin:
        query = query.where(Job.owner == principal.owner)
    if status:
        query = query.where(Job.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
    return list(rows), int(total or 0)


def cancel_job(session: Session, principal: Principal, job_id: str) -> Job:
    """Cancel a queued job, or ask a running one to stop; a cancelled one is returned as it is.

    A job that has succeeded or failed is refused: it has nothing left to stop. The row is locked, so that a job
    its worker is finishing is seen finished, not given a cancel request after its end."""
    job = owned_job(session, principal, job_id, lock=True)
    if job.status in ("succeeded", "failed"):
        raise Conflict(f"job {job_id} has already {job.status}; there is nothing to cancel", field="job_id")
    request_cancel(session, job)
    session.commit()
    return job


def resume_job(session: Session, settings: Settings, principal: Principal, job_id: str, request_id: str | None) -> Job:
    """Queue a cancelled or failed job again: it goes on from its last checkpoint, or starts over without one.

    A job that is queued or running is returned as it is (a resume sent twice), unless it is stopping after a cancel;
    one that has succeeded is refused. Its dataset, and the checkpoint it starts from, are read ``FOR SHARE`` before
    the job's row is locked, the order in which their deletion takes them, so that a deletion beside this either
    commits first (and this is refused) or waits and then sees the job queued (and is refused)."""
    job = owned_job(session, principal, job_id)
    held_id = job.config["data"].get("val_dataset_id")
    used = [dataset_id for dataset_id in (job.dataset_id, held_id) if dataset_id is not None]
    if used:
        session.execute(select(Dataset.id).where(Dataset.id.in_(used)).with_for_update(read=True))
    if job.start_checkpoint_id is not None:
        session.execute(select(Checkpoint.id).where(Checkpoint.id == job.start_checkpoint_id)
                        .with_for_update(read=True))  # fmt: skip
    job = owned_job(session, principal, job_id, lock=True)  # gone meanwhile (deleted): 404
    if job.status in ("queued", "running"):
        if job.cancel_requested:
            raise Conflict(f"job {job_id} is stopping after a cancel; resume it once it is cancelled", field="job_id")
        return job
    if job.status == "succeeded":
        raise Conflict(f"job {job_id} has succeeded; there is nothing left to train. To train on from its weights, "
                       "register a checkpoint (POST /v1/models) and submit a job with start_from", field="job_id")  # fmt: skip
    if job.dataset_id is None:
        raise Conflict(f"job {job_id}'s dataset was deleted; upload it again and submit a new job", field="job_id")
    if held_id is not None and session.get(Dataset, held_id) is None:
        raise Conflict(f"job {job_id}'s held-out dataset {held_id} (data.val_dataset_id) was deleted; submit a new "
                       "job", field="job_id")  # fmt: skip
    rows = _checkpoint_rows(session, job)
    if not rows and job.start_from is not None and job.start_checkpoint_id is None:
        raise Conflict(f"job {job_id} has no checkpoint of its own, and the one it starts from (model "
                       f"{job.start_from['model']!r} version {job.start_from['version']}) was deleted; submit a new "
                       "job", field="job_id")  # fmt: skip
    where = f"it goes on from its checkpoint at step {rows[-1].step}" if rows else "it starts over (no checkpoint)"
    how = "was cancelled" if job.status == "cancelled" else "failed"
    reopen(session, job, f"resumed by its owner after it {how}: {where}")
    session.commit()
    _send(session, settings, job, request_id)
    return job


def delete_job(session: Session, storage: Storage, principal: Principal, job_id: str) -> None:
    """Delete a finished job: its row, events, metrics, checkpoints and their files.

    A queued or running job is refused (cancel it first), and so is one that model versions were registered from,
    since they serve its checkpoints, or whose checkpoint a job not yet ended starts from. Its checkpoints are locked
    first, so that a registration or a submission reading one (``FOR SHARE``) either commits before the checks below
    see it or finds the job gone."""
    job = owned_job(session, principal, job_id, lock=True)
    if job.status not in TERMINAL:
        raise Conflict(f"job {job_id} is {job.status}; cancel it (POST /v1/jobs/{job_id}/cancel) and delete it once "
                       "it has stopped", field="job_id")  # fmt: skip
    rows = list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id).with_for_update()))
    registered = session.execute(select(ModelVersion.name, ModelVersion.version).where(ModelVersion.job_id == job.id)
                                 .order_by(ModelVersion.name, ModelVersion.version)).all()  # fmt: skip
    if registered:
        versions = ", ".join(f"{name} version {version}" for name, version in registered)
        raise Conflict(f"job {job_id}'s checkpoints are registered as {versions}; delete those first "
                       "(DELETE /v1/models/{name}?version=N)", field="job_id")  # fmt: skip
    if starting := sorted({job_id for job_id, _ in jobs_starting_from(session, rows)}):
        raise Conflict(f"job {job_id}'s checkpoint is where job {', '.join(starting)} starts from; wait until it has "
                       "ended, or cancel it", field="job_id")  # fmt: skip
    session.delete(job)  # events, metrics and checkpoint rows go with it (ON DELETE CASCADE)
    session.commit()
    storage.delete_checkpoints(job_id)


def metric_series(session: Session, job: Job, max_points: int | None = None) -> dict[str, list[MetricPoint]]:
    """Every metric's series, by step: in full, or thinned to at most ``max_points`` (>= 2) recorded points each.

    A thinned series keeps every k-th point with the least k that fits, and its last point: a run of 100,000 steps
    records 400,000 points (15 MB of JSON, 2 s to answer), more than a chart can draw."""
    query = select(Metric.name, Metric.step, Metric.epoch, Metric.value).where(Metric.job_id == job.id)
    if max_points is not None:
        numbered = query.add_columns(
            func.row_number().over(partition_by=Metric.name, order_by=Metric.step).label("n"),
            func.count().over(partition_by=Metric.name).label("total"),
        ).subquery()
        # k = ceil((total - 1) / (max_points - 1)), at least 1, in integer arithmetic: the points 1, 1 + k, 1 + 2k, ...
        # are at most max_points, and so are they with the last added where it is not among them
        ceiling = (numbered.c.total + max_points - 3) // (max_points - 1)
        stride = case((ceiling < 1, 1), else_=ceiling)
        kept = ((numbered.c.n - 1) % stride == 0) | (numbered.c.n == numbered.c.total)
        query = select(numbered.c.name, numbered.c.step, numbered.c.epoch, numbered.c.value).where(kept)
    series: dict[str, list[MetricPoint]] = {}
    rows = session.execute(query.order_by("name", "step"))
    for name, step, epoch, value in rows:
        series.setdefault(name, []).append(MetricPoint(step=step, epoch=epoch, value=value))
    return series


def _checkpoint_rows(session: Session, job: Job) -> list[Checkpoint]:
    return list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id).order_by(Checkpoint.step)))


def checkpoints(session: Session, job: Job) -> list[CheckpointRead]:
    """The job's checkpoints by step, the one 'best' names marked."""
    rows = _checkpoint_rows(session, job)
    best = best_checkpoint(rows).id if rows else None
    return [CheckpointRead.model_validate(row).model_copy(update={"best": row.id == best}) for row in rows]


def events(session: Session, job: Job) -> list[JobEvent]:
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)))


def to_read(job: Job | Row) -> JobRead:
    """The API view of a job (an ORM object or a row of the job table), with progress and ETA."""
    # a job that succeeded is done, at its last step or where it stopped early (train.early_stop_patience)
    fraction = 1.0 if job.status == "succeeded" else job.step / job.total_steps if job.total_steps else 0.0
    eta = None
    if job.status == "running" and job.samples_per_s and job.total_steps:
        batch = job.config.get("train", {}).get("batch_size", 1)
        eta = (job.total_steps - job.step) * batch / job.samples_per_s
    progress = Progress(epoch=job.epoch, step=job.step, total_steps=job.total_steps, fraction=round(fraction, 6),
                        samples_per_s=job.samples_per_s, eta_s=eta)  # fmt: skip
    return JobRead(
        id=job.id, name=job.name, dataset_id=job.dataset_id, status=job.status, config=job.config,
        start_from=job.start_from, queue=job.queue,
        progress=progress, metrics=job.latest_metrics or {}, error=job.error, attempts=job.attempts, worker=job.worker,
        cancel_requested=job.cancel_requested, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, updated_at=job.updated_at,
    )  # fmt: skip


@lru_cache(maxsize=32)
def _picture(checkpoint: Path, dataset: Path, modality: str, fmt: str, columns: Columns, limits: ReadLimits,
             val_fraction: float, seed: int, limit: int) -> tuple[tuple[float, float, str | None], ...]:  # fmt: skip
    """(x, y, label) of the first ``limit`` held-out records (all records without a split) in a 2-D PCA of their
    embeddings at ``checkpoint``.

    The last 32 pictures drawn are kept in the process: a checkpoint and a dataset never change under their paths,
    and drawing one reads the whole dataset, loads the checkpoint and embeds up to ``limit`` records (for 500 short
    texts with the MiniLM backbone on the 2-core VM, 4.7 s the first time and 1.2 s after), so that the dashboard
    showing a checkpoint again answers at once. A failure is not kept.
    """
    records = read_records(dataset, modality, fmt, limits, columns)
    _, held_out = records.split(val_fraction, seed)
    sample = held_out if held_out is not None else records
    sample = sample.take(np.arange(min(limit, len(sample))))
    xy = project_2d(embed_records(Embedder(checkpoint), sample))
    names = sample.label_names or []
    labels = [names[i] if i < len(names) else str(i) for i in sample.labels] if sample.labels is not None else None
    return tuple((float(x), float(y), labels[n] if labels else None) for n, (x, y) in enumerate(xy))


def projection(session: Session, storage: Storage, settings: Settings, job: Job, checkpoint_id: str | None,
               limit: int) -> Projection:  # fmt: skip
    """A 2-D PCA picture of held-out embeddings at a checkpoint (the last by default), coloured by label."""
    rows = _checkpoint_rows(session, job)
    if not rows:
        raise Invalid(f"job {job.id} has no checkpoint yet", field="checkpoint_id")
    chosen = rows[-1] if checkpoint_id is None else next((c for c in rows if c.id == checkpoint_id), None)
    if chosen is None:
        raise NotFound(f"checkpoint {checkpoint_id} not found in job {job.id}", field="checkpoint_id")
    config = RunConfig.model_validate(job.config)
    held_id = config.data.val_dataset_id  # its records are the held-out ones, all of them
    dataset_id = held_id or job.dataset_id
    dataset = session.get(Dataset, dataset_id) if dataset_id else None
    if dataset is None:
        raise Invalid(f"the job's {'held-out ' if held_id else ''}dataset was deleted", field="job_id")
    dataset_file = storage.dataset_file(dataset.storage_key, dataset.id)
    picture = _picture(storage.path(chosen.storage_key), dataset_file, dataset.modality, dataset.format,
                       dataset.columns, settings.read_limits, config.data.val_fraction, config.train.seed,
                       limit)  # fmt: skip
    points = [ProjectionPoint(x=x, y=y, label=label) for x, y, label in picture]
    return Projection(job_id=job.id, checkpoint_id=chosen.id, step=chosen.step, points=points)
