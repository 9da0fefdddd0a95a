"""The training callback that writes progress, metrics and checkpoints to the database, throttled."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict

from prometheus_client import Counter, Gauge
from sqlalchemy.exc import IntegrityError, OperationalError

from core.store.db import transaction
from core.store.jobs import add_event, prune_checkpoints, record_checkpoint, record_progress
from core.store.settings import Settings
from core.store.storage import Storage
from core.train.callbacks import CheckpointInfo, EvalReport, StepReport

log = logging.getLogger("embedtrain.worker")
SAMPLES_PER_S = Gauge("embedtrain_worker_job_samples_per_second", "Training samples/s of the job on this worker.",
                      ["job_id"])  # fmt: skip
STEPS = Counter("embedtrain_worker_steps", "Optimisation steps run by this worker.")
STEP_SERIES = ("loss", "lr", "temperature", "samples_per_s")


class DatabaseRecorder:
    """Buffers each step's metrics and writes them at most every ``progress_interval_s``.

    Evaluations and checkpoints flush at once. A write that fails because the database is away is kept
    and retried at the next flush; the final flush retries until it succeeds or ``final_retries`` run out.

    While the database stays away, the steps' flushes back off: the next try waits the interval (at least
    ``MIN_RETRY_S``) doubled at each failure in a row, up to ``MAX_RETRY_S``. Each try costs the training thread a
    connection attempt, up to ``db_timeout_s`` where the database does not answer at all; trying at every step
    instead (as before) stalled training that long at every step, and logged a warning at every step.

    What waits is bounded: past ``max_pending_points`` (4 a step), the steps' series keep every second step of
    those waiting, then every fourth, and so on, with a ``metrics_thinned`` event once written, as the API's
    ``max_points`` thins a series. A point takes ~112 bytes (tracemalloc), so an outage of a few hours under a
    fast run (130 steps/s with the vector model on the 2-core VM: 210 MB an hour) could otherwise take the worker's
    memory.
    """

    MIN_RETRY_S = 1.0
    MAX_RETRY_S = 60.0
    MAX_PENDING_POINTS = 400_000  # ~45 MB

    def __init__(self, settings: Settings, job_id: str, worker: str, storage: Storage, final_retries: int = 30,
                 keep_checkpoints: int | None = None, max_pending_points: int = MAX_PENDING_POINTS) -> None:  # fmt: skip
        self.settings, self.job_id, self.worker, self.storage = settings, job_id, worker, storage
        self.keep_checkpoints = keep_checkpoints  # the run's train.keep_checkpoints; None keeps every one
        self.pending: list[tuple[str, int, int, float]] = []
        self.fields: dict = {}
        self.latest: dict[str, float] = {}
        self.next_flush = -math.inf  # monotonic time from which a step flushes
        self.failures = 0  # flushes failed in a row
        self.retry_base_s = max(settings.progress_interval_s, self.MIN_RETRY_S)
        self.max_pending_points = max_pending_points
        self.stride = 1  # while waiting points were thinned: the steps' series keep the steps divisible by this
        self.thinned_from: int | None = None  # the first step thinned
        self.final_retries = final_retries

    def on_step(self, report: StepReport) -> None:
        SAMPLES_PER_S.labels(self.job_id).set(report.samples_per_s)
        STEPS.inc()
        values = asdict(report)
        if report.step % self.stride == 0:
            self.pending += [(name, report.step, report.epoch, float(values[name])) for name in STEP_SERIES]
            if len(self.pending) > self.max_pending_points:
                self._thin(report.step)
        self.latest.update({name: float(values[name]) for name in ("loss", "lr", "temperature")})
        self.fields = {
            "step": report.step,
            "total_steps": report.total_steps,
            "epoch": report.epoch,
            "samples_per_s": report.samples_per_s,
            "latest_metrics": dict(self.latest),
        }
        if time.monotonic() >= self.next_flush:
            self.flush()

    def _thin(self, step: int) -> None:
        """Keep the waiting steps' points of every second step of those kept so far."""
        self.stride *= 2
        if self.thinned_from is None:
            self.thinned_from = min(p[1] for p in self.pending)
        self.pending = [p for p in self.pending if p[0] not in STEP_SERIES or p[1] % self.stride == 0]
        log.warning("more than %d metric points wait for the database at step %d: the steps' series keep one step in %d",
                    self.max_pending_points, step, self.stride)  # fmt: skip

    def on_eval(self, report: EvalReport) -> None:
        self.pending += [(name, report.step, report.epoch, float(v)) for name, v in report.metrics.items()]
        self.latest.update(report.metrics)
        self.fields["latest_metrics"] = dict(self.latest)
        if not self.failures or time.monotonic() >= self.next_flush:  # at once, unless backing off
            self.flush()

    def on_checkpoint(self, info: CheckpointInfo) -> None:
        self.flush(must=True)
        key = self.storage.key_of(info.path)
        self.retry(lambda s: record_checkpoint(s, self.job_id, info.step, info.epoch, key, info.metrics))
        if self.keep_checkpoints is not None:
            self.prune(self.keep_checkpoints)

    def prune(self, keep: int) -> None:
        """Delete the checkpoints :func:`~core.store.jobs.prune_checkpoints` gives up: rows first, files once that
        committed (a file without a row is only disk; a row without its file would be a broken checkpoint)."""
        doomed: list[str] = []

        def work(session) -> None:  # noqa: ANN001 - a Session
            doomed[:] = prune_checkpoints(session, self.job_id, keep)  # a retried attempt starts over

        try:
            self.retry(work)
        except IntegrityError as error:  # a model was registered from one of them meanwhile: next checkpoint, again
            log.warning("checkpoints not pruned this time: %s", str(error).splitlines()[0])
            return
        for key in doomed:
            self.storage.delete(key)

    def flush(self, must: bool = False) -> None:
        """Write what is pending; ``must`` retries until written (checkpoints and the end of the run)."""
        if not self.pending and not self.fields:
            return
        pending, fields = list(self.pending), dict(self.fields)

        def write(session) -> None:  # noqa: ANN001 - a Session
            record_progress(session, self.job_id, self.worker, fields, pending)

        if must:
            self.retry(write)
        else:
            try:
                with transaction(self.settings) as session:
                    write(session)
            except OperationalError as error:
                self.failures += 1
                wait = min(self.MAX_RETRY_S, self.retry_base_s * 2 ** (self.failures - 1))
                self.next_flush = time.monotonic() + wait
                log.warning("progress write failed (%d in a row), kept; next try in %.0f s: %s", self.failures, wait,
                            str(error).splitlines()[0])  # fmt: skip
                return
        del self.pending[: len(pending)]
        self.failures = 0
        if self.thinned_from is not None:
            self.event("metrics_thinned", f"more than {self.max_pending_points} metric points waited for the database: "
                                          f"of steps {self.thinned_from}-{fields['step']}, loss, lr, temperature and "
                                          f"samples_per_s were kept for one step in {self.stride}")  # fmt: skip
            self.stride, self.thinned_from = 1, None
        self.next_flush = time.monotonic() + self.settings.progress_interval_s

    def event(self, kind: str, message: str) -> None:
        """Append to the job's event log."""
        self.retry(lambda s: add_event(s, self.job_id, kind, message))

    def retry(self, work) -> None:  # noqa: ANN001 - a callable taking a Session
        """Run ``work(session)`` in a transaction, retrying with backoff while the database is away."""
        for attempt in range(self.final_retries):
            try:
                with transaction(self.settings) as session:
                    work(session)
                return
            except OperationalError as error:
                log.warning("database write failed (attempt %d): %s", attempt + 1, str(error).splitlines()[0])
                time.sleep(min(5.0, 0.2 * 2**attempt))
        raise RuntimeError(f"the database stayed unreachable for {self.final_retries} attempts")
