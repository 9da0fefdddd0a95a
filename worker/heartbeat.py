"""A thread that renews the job's lease and tells the loop when to stop (cancel requested, lease lost, or the worker
shutting down)."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import OperationalError

from core.store.db import transaction
from core.store.jobs import renew
from core.store.settings import Settings

log = logging.getLogger("embedtrain.worker")

# Set when Celery starts to shut this worker down (SIGTERM, Ctrl-C: worker/celery_app.py): the job stops at its next
# step, checkpoints, and goes back to the queue, instead of holding the shutdown until it ends.
worker_stopping = threading.Event()


class Heartbeat:
    """Renews the lease every ``heartbeat_s``; ``should_stop`` is what ``fit`` polls between steps."""

    def __init__(self, settings: Settings, job_id: str, worker: str) -> None:
        self.settings, self.job_id, self.worker = settings, job_id, worker
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.lost.is_set() or worker_stopping.is_set()

    def _run(self) -> None:
        while not self._done.wait(self.settings.heartbeat_s):
            try:
                with transaction(self.settings) as session:
                    lease = renew(session, self.job_id, self.worker, self.settings.lease_s)
            except OperationalError as error:  # the database is away: keep training, try again next beat
                log.warning("heartbeat failed: %s", str(error).splitlines()[0])
                continue
            if lease.cancel_requested:
                self.cancelled.set()
            if not lease.held:
                log.warning("lease on job %s lost; stopping this attempt", self.job_id)
                self.lost.set()
