"""The sweeper thread every worker runs: applies the stale-job rule and re-sends jobs to their queues."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import DBAPIError, OperationalError

from core.store.broker import send_train
from core.store.db import transaction
from core.store.jobs import mark_dispatched, sweep
from core.store.schema import is_missing_schema_object
from core.store.settings import Settings

log = logging.getLogger("embedtrain.worker")
_stop = threading.Event()


def sweep_once(settings: Settings) -> list[str]:
    """One pass of the rule in :func:`core.store.jobs.sweep`; returns the ids sent again."""
    with transaction(settings) as session:
        jobs = sweep(session, settings.max_attempts, settings.requeue_after_s)
        targets = [(job.id, job.queue, job.request_id) for job in jobs]
        for job_id, _, _ in targets:
            mark_dispatched(session, job_id)
    for job_id, queue, request_id in targets:  # after commit: the row says queued before the message exists
        send_train(settings, job_id, queue, request_id)
        log.info("re-sent job %s to queue %s", job_id, queue)
    return [job_id for job_id, _, _ in targets]


def _loop(settings: Settings) -> None:
    while not _stop.wait(settings.sweep_interval_s):
        sweep_logged(settings)


def sweep_logged(settings: Settings) -> None:
    """One sweep whose failure is logged, for the loop to try again at its next interval."""
    try:
        sweep_once(settings)
    except DBAPIError as error:
        reason = str(error).splitlines()[0]
        if is_missing_schema_object(error):  # an operator's step, said in one line rather than a traceback
            log.error("sweep skipped: the database lacks this version's schema (%s); run `embedtrain-admin migrate`",
                      reason)  # fmt: skip
        elif isinstance(error, OperationalError):
            log.warning("sweep skipped, database unreachable: %s", reason)
        else:
            log.exception("sweep failed")
    except Exception:  # keep sweeping on the next interval, but say what went wrong
        log.exception("sweep failed")


def start_sweeper(settings: Settings) -> None:
    """Start the background sweeper of this worker process."""
    _stop.clear()
    threading.Thread(target=_loop, args=(settings,), name="sweeper", daemon=True).start()


def stop_sweeper() -> None:
    _stop.set()
