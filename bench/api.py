"""The API under load against PostgreSQL: job status polls and job submissions with 64 concurrent clients.

    python bench/api.py [--pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--workers 2]

Creates a throwaway database, starts the API (uvicorn, ``--workers`` processes, no training worker: submitted jobs
stay queued), and drives it with wrk (C) for ``--seconds`` per scenario. Reports requests/s, p50/p99/p99.9/maximum
as wrk reports them (after its coordinated-omission correction) and as measured (``measured``: each answer timed by
the wrk script, with no correction, and how many took over 0.1-2.5 s), errors, how the API processes shared the
connections, where the machine's cores went and how late a thread sleeping 5 ms woke meanwhile, for the polls how
many the app itself timed over 0.1-2.5 s, whether the kernel groups each session's processes for scheduling
(:func:`bench.machine.kernel_autogroup`), and the database connections in use at the end. Then, in this process and
one thread, the poll's database read alone (``core.store.db.read_first``) in ``--read-rounds`` alternating pairs of
0.5 s rounds: reads/s and CPU per read with a pooled connection pinged at every checkout
(``EMBEDTRAIN_DB_PING_AFTER_IDLE_S=0``, as SQLAlchemy's ``pool_pre_ping``) and with the default ping after idleness;
the same read with its statement built at every read, as it was, and built once with a bound parameter
(``api.jobs.service.JOB_BY_ID``). Then the poll through the app in this process (ASGI, no HTTP, 8 concurrent
callers), ``--read-rounds`` alternating pairs: CPU per poll of the service's poll (a plain route,
:mod:`api.plain_route`) and of the same poll as an ordinary FastAPI route (dependencies, response validation),
defined here for the comparison. And the hand-off of a read to a thread and back alone (a no-op, 8 concurrent
callers, uvloop), ``--read-rounds`` alternating pairs: CPU per call of the service's read threads
(:mod:`api.threads`, the event loop's ``run_in_executor``) and of anyio's ``to_thread.run_sync`` under a capacity
limiter of the same size, which they replaced. Writes ``bench/results/api.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import psycopg
import uvloop
from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.deps import PrincipalDep, SettingsDep, run_read  # noqa: E402
from api.jobs import service as jobs  # noqa: E402
from api.jobs.schemas import JobRead  # noqa: E402
from api.main import create_app  # noqa: E402
from api.threads import ReadThreads  # noqa: E402
from bench import wrk  # noqa: E402
from bench.machine import WakeUps, describe, kernel_autogroup, machine_ticks  # noqa: E402
from bench.service import Service  # noqa: E402
from core.store.db import read_first  # noqa: E402
from core.store.settings import Settings  # noqa: E402
from core.store.tables import Job  # noqa: E402


def run_wrk(url: str, script: str, clients: int, seconds: int, service: Service | None = None) -> dict:
    """One wrk run (:func:`bench.wrk.run`); with ``service``, also how its API processes shared the connections
    (counted half-way). Beside it, where the machine's cores went and how late a sleeping thread woke
    (:class:`bench.machine.WakeUps`): a tail of slow answers with no late wake-up was the service's, not the VM's."""
    shares: list = []

    def count_connections() -> None:
        if service is not None:
            time.sleep(seconds / 2)
            shares.append(connections_by_process(service.port, service.api_pids()))

    ticks0, began = machine_ticks(), time.monotonic()
    with WakeUps() as wakeups:
        run = wrk.run(url, script, clients, min(2, clients), seconds, timeout_s=30, meanwhile=count_connections)
    ticks, elapsed = machine_ticks(), time.monotonic() - began
    corrected = run["wrk"]  # the fields this file has always written: wrk's
    result = {"clients": clients, "requests": run["requests"], "errors": run["errors"],
              "requests_per_s": run["requests_per_s"], "p50_ms": corrected["p50_ms"], "p99_ms": corrected["p99_ms"],
              "p99_9_ms": corrected["p99_9_ms"], "max_ms": corrected["max_ms"], "measured": run["measured"]}  # fmt: skip
    clock = elapsed * os.sysconf("SC_CLK_TCK")
    result["machine"] = {f"{kind}_cores": round((ticks[kind] - ticks0[kind]) / clock, 3) for kind in ticks}
    result["wakeups"] = wakeups.summary()
    if shares:
        result["connections_per_api_process"] = shares[0]
    return result


SERVER_TAIL_S = (0.1, 0.25, 0.5, 1.0, 2.5)  # bounds of api.metrics.LATENCY_BUCKETS


def server_latency(service: Service, route: str) -> dict[str, float]:
    """The requests to ``route`` the API processes have timed so far (from the request middleware's histogram, from
    when a process's app took the request to its answer), in all and within each bound of :data:`SERVER_TAIL_S`."""
    counts = {"all": 0.0, **{f"{bound}": 0.0 for bound in SERVER_TAIL_S}}
    for name, value in service.metric_samples():
        metric, _, labels = name.partition("{")
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if metric == "embedtrain_http_request_seconds_bucket" and label.get("route") == route:
            key = "all" if label["le"] == "+Inf" else str(float(label["le"]))
            if key in counts:
                counts[key] += float(value)
    return counts


def connections_by_process(port: int, pids: list[int]) -> list[int]:
    """Established connections to ``port`` held by each of the API processes ``pids``.

    Each process keeps the connections it accepted, so with closed-loop clients an uneven split is an uneven queue
    (on the 2-core VM it did not track the p99: 24/40 came with 87 ms, 31/33 with 113 ms).
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()  # local address, remote address, state ("01": established), ..., inode
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in pids:
        links = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                links.add(os.readlink(fd))
            except FileNotFoundError:  # closed since the listing
                continue
        counts.append(len(links & inodes))
    return sorted(counts)


def alternate_reads(variants: dict[str, Callable[[], object]], pairs: int, seconds: float) -> dict:
    """Reads/s and CPU per read of each variant in this thread, in ``pairs`` alternating pairs of rounds."""

    def rate(read: Callable[[], object], seconds: float) -> tuple[float, float]:
        reads, wall, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - wall < seconds:
            assert read() is not None
            reads += 1
        return reads / (time.perf_counter() - wall), (time.process_time() - cpu) * 1e6 / reads

    for read in variants.values():
        rate(read, 1.0)  # warm: connections, prepared statements
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for pair in range(pairs):
        for name in variants if pair % 2 else reversed(variants):
            rounds[name].append(rate(variants[name], seconds))
    ratios = [b[0] / a[0] for a, b in zip(*rounds.values(), strict=True)]
    result = {name: {"reads_per_s": round(statistics.median(r for r, _ in series), 1),
                     "cpu_us_per_read": round(statistics.median(c for _, c in series), 1)}
              for name, series in rounds.items()}  # fmt: skip
    result["ratio_of_reads_per_s"] = {
        "median": round(statistics.median(ratios), 3),
        "rounds": [round(r, 3) for r in ratios],
    }
    return result


def poll_reads(url: str, job_id: str, pairs: int, seconds: float = 0.5) -> dict:
    """The poll's database read in one thread, a ping at every checkout against one after idleness, alternating."""
    ping = {"ping_every_checkout": Settings(database_url=url, db_ping_after_idle_s=0.0),
            "ping_after_idle_1s": Settings(database_url=url, db_ping_after_idle_s=1.0)}  # fmt: skip
    return alternate_reads(
        {name: partial(read_first, settings, jobs.JOB_BY_ID, {"job_id": job_id}) for name, settings in ping.items()},
        pairs, seconds,
    )  # fmt: skip


def poll_statement(url: str, job_id: str, pairs: int, seconds: float = 0.5) -> dict:
    """The poll's read with its statement built at every read (as it was) against built once, alternating."""
    settings = Settings(database_url=url)
    return alternate_reads(
        {"built_at_each_read": lambda: read_first(settings, select(Job.__table__).where(Job.id == job_id)),
         "built_once": lambda: read_first(settings, jobs.JOB_BY_ID, {"job_id": job_id})},
        pairs, seconds,
    )  # fmt: skip


async def _fastapi_poll(request: Request, settings: SettingsDep, principal: PrincipalDep, job_id: str) -> JobRead:
    """The poll as an ordinary FastAPI route, for the comparison (the service's is a plain route)."""
    return await run_read(request, jobs.read_job, settings, principal, job_id)


def poll_through_app(settings: Settings, key: str, job_id: str, pairs: int, seconds: float = 0.5) -> dict:
    """CPU per poll through the app in this process, the service's route against the FastAPI one, alternating."""
    apps: dict[str, FastAPI] = {"plain_route": create_app(settings), "fastapi_route": create_app(settings)}
    apps["fastapi_route"].router.routes.insert(0, APIRoute("/v1/jobs/{job_id}", _fastapi_poll, response_model=JobRead))
    path = f"/v1/jobs/{job_id}"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {key}".encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}  # fmt: skip

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def poll(app: FastAPI) -> None:
        statuses = []

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app({**scope, "state": {}}, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"the poll answered {statuses}")

    async def cpu_per_poll(app: FastAPI, seconds: float, callers: int = 8) -> float:
        polls, wall, cpu = 0, time.perf_counter(), time.process_time()

        async def caller() -> None:
            nonlocal polls
            while time.perf_counter() - wall < seconds:
                await poll(app)
                polls += 1

        await asyncio.gather(*(caller() for _ in range(callers)))
        return (time.process_time() - cpu) * 1e6 / polls

    async def rounds() -> dict[str, list[float]]:
        for app in apps.values():
            await cpu_per_poll(app, 1.0)  # warm: threads, connections, caches
        series: dict[str, list[float]] = {name: [] for name in apps}
        for pair in range(pairs):
            for name in apps if pair % 2 else reversed(apps):
                series[name].append(await cpu_per_poll(apps[name], seconds))
        return series

    series = uvloop.run(rounds())
    ratios = [plain / fastapi for plain, fastapi in zip(series["plain_route"], series["fastapi_route"], strict=True)]
    result: dict = {name: {"cpu_us_per_poll": round(statistics.median(v), 1)} for name, v in series.items()}
    result["cpu_ratio_plain_over_fastapi"] = {"median": round(statistics.median(ratios), 3),
                                              "rounds": [round(r, 3) for r in ratios]}  # fmt: skip
    return result


def read_hop(threads: int, pairs: int, seconds: float = 0.5, callers: int = 8) -> dict:
    """CPU per hand-off of a no-op to a read thread and back: the service's read threads against anyio's."""
    pool, limiter = ReadThreads(threads), CapacityLimiter(threads)
    hops = {"read_threads": lambda: pool.run(int), "anyio_to_thread": lambda: to_thread.run_sync(int, limiter=limiter)}

    async def cpu_per_hop(name: str, seconds: float) -> float:
        calls, wall, cpu = 0, time.perf_counter(), time.process_time()

        async def caller() -> None:
            nonlocal calls
            while time.perf_counter() - wall < seconds:
                await hops[name]()
                calls += 1

        await asyncio.gather(*(caller() for _ in range(callers)))
        return (time.process_time() - cpu) * 1e6 / calls

    async def rounds() -> dict[str, list[float]]:
        for name in hops:
            await cpu_per_hop(name, 0.5)  # warm: threads
        series: dict[str, list[float]] = {name: [] for name in hops}
        for pair in range(pairs):
            for name in hops if pair % 2 else reversed(hops):
                series[name].append(await cpu_per_hop(name, seconds))
        return series

    try:
        series = uvloop.run(rounds())
    finally:
        pool.close()
    ratios = [ours / anyio for ours, anyio in zip(series["read_threads"], series["anyio_to_thread"], strict=True)]
    result: dict = {name: {"cpu_us_per_call": round(statistics.median(v), 1)} for name, v in series.items()}
    result["cpu_ratio_read_threads_over_anyio"] = {"median": round(statistics.median(ratios), 3),
                                                  "rounds": [round(r, 3) for r in ratios]}  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--read-rounds", type=int, default=10, help="pairs of rounds of the poll's read alone")
    parser.add_argument("--out", type=Path, default=Path("bench/results/api.json"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/api.py needs wrk (apt-get install wrk)")
    name = f"embedtrain_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = args.pg.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{name}"
    result: dict = {"machine": describe(), "kernel_autogroup": kernel_autogroup(),
                    "api_processes": args.workers, "clients": args.clients, "seconds": args.seconds}  # fmt: skip
    try:
        with Service(database_url=url, api_workers=args.workers, worker=False) as service:
            with httpx.Client(base_url=service.base, headers=service.headers, timeout=60) as client:
                rows = "a,b\n" + "".join(f"{i},{i % 5}\n" for i in range(64))
                dataset = client.post("/v1/datasets", data={"modality": "vectors"},
                                      files={"file": ("v.csv", rows.encode())}).json()  # fmt: skip
                body = {
                    "dataset_id": dataset["id"],
                    "config": {"data": {"modality": "vectors"}, "train": {"batch_size": 8}},
                }
                job = client.post("/v1/jobs", json=body).json()
            auth = f'wrk.headers["Authorization"] = "Bearer {service.key}"\n'
            run_wrk(f"{service.base}/v1/jobs/{job['id']}", auth, args.clients, 3)  # warm-up: threads, pool, caches
            before = server_latency(service, "/v1/jobs/{job_id}")
            polls = run_wrk(f"{service.base}/v1/jobs/{job['id']}", auth, args.clients, args.seconds, service)
            after = server_latency(service, "/v1/jobs/{job_id}")
            timed = {bound: after[bound] - before[bound] for bound in after}
            # how many answers were slow inside the app too: those over a bound are all timed, less those within it
            polls["server_side"] = {"requests": int(timed["all"]),
                                    **{f"over_{b}_s": int(timed["all"] - timed[str(b)]) for b in SERVER_TAIL_S}}  # fmt: skip
            result["status_polls"] = polls
            submit = (auth + 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(json.dumps(body))}\n")  # fmt: skip
            result["submissions"] = run_wrk(f"{service.base}/v1/jobs", submit, args.clients, args.seconds, service)
            with psycopg.connect(args.pg) as conn:
                result["db_connections_at_end"] = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0]  # fmt: skip
            result["db_pool_limit"] = f"{args.workers} processes x (pool 10 + overflow 10) = {args.workers * 20}"
        result["poll_read_alone"] = poll_reads(url, job["id"], args.read_rounds)
        result["poll_statement"] = poll_statement(url, job["id"], args.read_rounds)
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(database_url=url, storage_root=Path(tmp), log_level="WARNING")
            result["poll_through_app"] = poll_through_app(settings, service.key, job["id"], args.read_rounds)
        result["read_hop"] = read_hop(Settings().api_read_threads, args.read_rounds)
    finally:
        with psycopg.connect(args.pg, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
