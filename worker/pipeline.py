"""One job, start to end: claim, load, train with heartbeat and recorder, record the outcome."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from sqlalchemy import select

from core.config import RunConfig
from core.data.readers import DatasetError, read_records
from core.data.records import Records
from core.store.db import transaction
from core.store.jobs import claim, finish, hand_back
from core.store.logs import job_id_var, request_id_var
from core.store.settings import Settings
from core.store.storage import Storage
from core.store.tables import Checkpoint, Dataset, Job
from core.train.checkpoint import CheckpointError, is_complete
from core.train.loop import FitResult, TrainingError, fit
from worker.distributed import run_distributed
from worker.heartbeat import Heartbeat, worker_stopping
from worker.recorder import DatabaseRecorder

log = logging.getLogger("embedtrain.worker")
OUT_OF_MEMORY = "out of memory: lower train.batch_size, set loss.chunk_size, or use train.grad_cache_sub_batch"


def _is_cpu_oom(error: BaseException) -> bool:
    """CPU allocations that fail raise RuntimeError ("can't allocate memory") or MemoryError, not OutOfMemoryError."""
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error).lower()
    )


@dataclass(frozen=True)
class JobInput:
    """What a job trains on, read from its rows: its dataset split into the records trained on and those held out,
    or trained on whole beside a held-out dataset (the file as read is not kept beside them: the split copies the
    records, and both would be held to the end)."""

    config: RunConfig
    train: Records
    val: Records | None
    resume_from: Path | None
    start_from: Path | None  # the checkpoint of the registered model its weights start from


def worker_name() -> str:
    """This worker process, as recorded on the jobs it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def load_input(settings: Settings, storage: Storage, job_id: str) -> JobInput:
    """Parse the config, read the dataset (and the held-out dataset it names), and find the last complete checkpoint
    to resume from, and the checkpoint of the model the job starts from."""
    with transaction(settings) as session:
        job = session.get(Job, job_id)
        dataset = session.get(Dataset, job.dataset_id)
        checkpoints = session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc())
        ).all()
        raw_config, modality, fmt, key = job.config, dataset.modality, dataset.format, dataset.storage_key
        columns, dataset_id = dataset.columns, dataset.id
        keys = [c.storage_key for c in checkpoints]
        start = session.get(Checkpoint, job.start_checkpoint_id) if job.start_checkpoint_id else None
        start_key, started_from = (start.storage_key if start is not None else None), job.start_from
        held_id = (raw_config.get("data") or {}).get("val_dataset_id")
        held = session.get(Dataset, held_id) if held_id else None
        held_read = (held.storage_key, held.id, held.modality, held.format, held.columns) if held else None
    resume = next((storage.path(k) for k in keys if is_complete(storage.path(k))), None)
    start_path = storage.path(start_key) if start_key else None
    if resume is None and started_from:  # a checkpoint of its own holds the weights that grew from the model's
        if start_path is None:  # its job deleted: refused while this one could need it, so only once it had ended
            raise CheckpointError(f"the checkpoint this job starts from ({started_from['checkpoint_id']}, of model "
                                  f"{started_from['model']!r}) was deleted; submit the job again")  # fmt: skip
        if not is_complete(start_path):
            raise CheckpointError(f"the checkpoint this job starts from ({start_key}) is missing from storage or "
                                  "incomplete; register another checkpoint and submit the job again")  # fmt: skip
    try:
        config = RunConfig.model_validate(raw_config)
    except ValidationError as error:
        raise TrainingError(f"the stored config is no longer valid: {error}") from None
    if held_id and held_read is None:
        raise TrainingError(f"the held-out dataset {held_id} (data.val_dataset_id) was deleted; submit the job again "
                            "with another, or with data.val_fraction")  # fmt: skip
    records = read_records(storage.dataset_file(key, dataset_id), modality, fmt, settings.read_limits, columns)
    if config.data.use_labels and records.labels is None:
        raise TrainingError("data.use_labels is true but the dataset has no labels; upload labels or set it false")
    if config.augment.kind == "text" and config.augment.mode == "pairs" and records.positives is None:
        raise TrainingError("augment.mode is 'pairs' but the dataset has no anchor/positive columns")
    train, val = records.split(config.data.val_fraction, config.train.seed)
    if held_read is not None:  # every record of it is held out, and the training dataset is trained on whole
        held_key, held_id, held_modality, held_fmt, held_columns = held_read
        val = read_records(storage.dataset_file(held_key, held_id), held_modality, held_fmt, settings.read_limits,
                           held_columns)  # fmt: skip
    return JobInput(config, train, val, resume, start_path)


def run_job(job_id: str, settings: Settings, request_id: str | None = None) -> None:
    """Run a job if this worker can claim it; every outcome ends in the job row."""
    job_id_var.set(job_id)
    request_id_var.set(request_id or None)
    worker = worker_name()
    with transaction(settings) as session:
        if not claim(session, job_id, worker, settings.lease_s):
            log.info("job not claimed (finished, cancelled, or running under a live lease elsewhere)")
            return
    storage = Storage(settings.storage_root)
    recorder = DatabaseRecorder(settings, job_id, worker, storage)
    heartbeat = Heartbeat(settings, job_id, worker).start()
    status, error = "failed", None
    try:
        job = load_input(settings, storage, job_id)
        if job.resume_from is not None:
            recorder.event("resumed", f"resuming from checkpoint {storage.key_of(job.resume_from)}")
        elif job.start_from is not None:
            recorder.event("started_from", f"starting from the weights of checkpoint {storage.key_of(job.start_from)}")
        result = _train(settings, storage, job_id, worker, job, recorder, heartbeat)
        recorder.flush(must=True)
        if result.early_stop:
            recorder.event("stopped_early", result.early_stop)
        if result.status == "completed":
            status = "succeeded"
        elif heartbeat.cancelled.is_set():
            status, error = "cancelled", f"cancelled at step {result.step} of {result.total_steps}"
        elif heartbeat.lost.is_set():
            log.warning("lease lost at step %d; leaving the job to its new owner", result.step)
            return
        else:
            status = "queued"  # the worker is shutting down: the job goes back to the queue
            error = f"worker {worker} shut down at step {result.step} of {result.total_steps}"
    except (TrainingError, DatasetError, CheckpointError) as failure:
        error = str(failure)
    except torch.OutOfMemoryError:
        error = OUT_OF_MEMORY
    except Exception as failure:  # the job must end with a message, whatever broke
        if worker_stopping.is_set():  # Celery's cold shutdown raises in the middle of a step (the solo pool)
            log.warning("job interrupted by the worker's shutdown: %s: %s", type(failure).__name__, failure)
            status, error = "queued", f"worker {worker} shut down during a step"
        elif _is_cpu_oom(failure):
            error = OUT_OF_MEMORY
        else:
            log.exception("job failed")
            error = f"internal error: {type(failure).__name__}: {failure}"
    finally:
        heartbeat.stop()
    if status == "queued":
        recorder.retry(lambda session: hand_back(session, job_id, worker, error))
    else:
        recorder.retry(lambda session: finish(session, job_id, worker, status, error))
    log.info("job ended %s", status)


def _train(
    settings: Settings, storage: Storage, job_id: str, worker: str, job: JobInput, recorder: DatabaseRecorder,
    heartbeat: Heartbeat,
) -> FitResult:  # fmt: skip
    config, train, val = job.config, job.train, job.val
    try:
        directory = storage.checkpoint_dir(job_id)
    except OSError as error:  # the volume read-only, not the worker's, or full: the operator's to fix
        raise CheckpointError(f"the job's checkpoint directory cannot be made ({error.strerror}): the volume of "
                              "EMBEDTRAIN_STORAGE_ROOT must be writable by the worker's user, with space") from None  # fmt: skip
    recorder.keep_checkpoints = config.train.keep_checkpoints  # made before the config was read
    if config.train.num_devices > 1:
        return run_distributed(settings, job_id, worker, config, train, val, directory, job.resume_from,
                               job.start_from, heartbeat)  # fmt: skip
    return fit(config, train, val, checkpoint_dir=directory, callback=recorder, should_stop=heartbeat.should_stop,
               resume_from=job.resume_from, start_from=job.start_from)  # fmt: skip
