"""Prometheus metrics of an API process: requests, jobs by state, queue depth, training speed, embeddings.

Request counters and histograms are filled by the request middleware and the embedding batcher; job states,
queue depth and per-job samples/s are read from the database when Prometheus scrapes (the database is the
source of truth, so every API replica reports the same values for them).

Several API processes behind one port (uvicorn ``--workers``, as Compose runs them) answer a scrape from whichever
process took the connection. With ``PROMETHEUS_MULTIPROC_DIR`` set to an empty directory (prometheus_client's own
setting, read when it is imported), each process writes its values to files there and every scrape sums all of
them, so the counters are the server's, not one process's: Compose gives the API such a directory on a tmpfs.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import func, select

from core.store.db import session_factory
from core.store.settings import Settings
from core.store.tables import Job

log = logging.getLogger("embedtrain.api")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class JobCollector:
    """Collects job-derived gauges from the database at scrape time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self):  # noqa: ANN201 - prometheus_client protocol
        by_state = GaugeMetricFamily("embedtrain_jobs", "Jobs by state.", labels=["status"])
        depth = GaugeMetricFamily("embedtrain_queue_depth", "Queued jobs per queue (database view).", labels=["queue"])
        speed = GaugeMetricFamily("embedtrain_job_samples_per_second", "Training samples/s of each running job.",
                                  labels=["job_id", "worker"])  # fmt: skip
        with session_factory(self.settings)() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            queues = session.execute(select(Job.queue, func.count()).where(Job.status == "queued").group_by(Job.queue))
            running = session.execute(select(Job.id, Job.worker, Job.samples_per_s).where(Job.status == "running"))
            for status in ("queued", "running", "succeeded", "failed", "cancelled"):
                by_state.add_metric([status], counts.get(status, 0))
            for queue, count in queues:
                depth.add_metric([queue], count)
            for job_id, worker, rate in running:
                speed.add_metric([job_id, worker or ""], rate or 0.0)
        yield from (by_state, depth, speed)


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def forget_dead_processes(shared_dir: str) -> list[int]:
    """Takes out of the live gauges' sums the processes of ``shared_dir`` that are gone; their pids.

    A process that stops gracefully leaves the sums itself (:meth:`Metrics.close`); one that was killed (uvicorn's
    supervisor kills a worker that stops answering and starts another) leaves its files behind, and the sums would
    count it until the directory is emptied. Each new process sweeps them at start-up. The processes share one pid
    namespace (one container), where a pid names a live process or none.
    """
    gone = set()
    for path in Path(shared_dir).iterdir():
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match and not _alive(pid := int(match.group(1))):
            gone.add(pid)
    for pid in gone:
        try:
            mark_process_dead(pid, shared_dir)
        except FileNotFoundError:  # a process starting beside this one swept it first
            continue
    if gone:
        log.warning("metrics: processes %s stopped without leaving the live gauges; taken out of the sums",
                    sorted(gone))  # fmt: skip
    return sorted(gone)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class Metrics:
    """The metrics of one app instance, in their own registry (so tests can build several apps)."""

    def __init__(self, settings: Settings) -> None:
        self.shared_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if self.shared_dir and not os.path.isdir(self.shared_dir):
            raise RuntimeError(f"PROMETHEUS_MULTIPROC_DIR={self.shared_dir} is not a directory: create it (empty)")
        if self.shared_dir:
            forget_dead_processes(self.shared_dir)
        self.registry = CollectorRegistry()
        self.requests = Counter("embedtrain_http_requests", "HTTP requests.", ["method", "route", "status"],
                                registry=self.registry)  # fmt: skip
        self.latency = Histogram("embedtrain_http_request_seconds", "HTTP request latency.", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.batch_size = Histogram("embedtrain_embedding_batch_size", "Inputs per shared forward pass.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=self.registry)  # fmt: skip
        self.forward = Histogram("embedtrain_embedding_forward_seconds", "Duration of one forward pass.",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.lone_passes = Counter("embedtrain_embedding_lone_passes", "Forward passes that ran alone, by the intra-op "
                                   "threads chosen for them.", ["threads"], registry=self.registry)  # fmt: skip
        self.cache = Counter("embedtrain_model_cache", "Model cache lookups.", ["result"], registry=self.registry)
        self.loaded = Gauge("embedtrain_models_loaded", "Deployed models held in memory (all API processes).",
                            multiprocess_mode="livesum", registry=self.registry)  # fmt: skip
        jobs = JobCollector(settings)
        self.registry.register(jobs)
        if self.shared_dir:  # scrapes read every process's files (this process's values are among them)
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed)
            self.exposed.register(jobs)
        else:
            self.exposed = self.registry
        self._by_request: dict[tuple[str, str, int], tuple] = {}  # each labelled child, looked up once

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Counts a request and its latency. ``route`` is a route's template, so the children are few and each is
        kept: looking them up by their labels in every request cost ~3 us of event-loop CPU."""
        children = self._by_request.get((method, route, status))
        if children is None:
            children = self.requests.labels(method, route, str(status)), self.latency.labels(method, route)
            self._by_request[method, route, status] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.exposed)

    def close(self) -> None:
        """At the process's end: its share of the live gauges leaves the sums (its counters stay in them)."""
        if self.shared_dir:
            mark_process_dead(os.getpid(), self.shared_dir)
