"""The read threads: calls run in at most N threads named for them, with the caller's context, errors passed on."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from api.threads import ReadThreads

request_id = contextvars.ContextVar("request_id", default="none")


def test_reads_run_in_at_most_n_named_threads_with_the_callers_context() -> None:
    threads = ReadThreads(2)
    running, most = 0, 0
    lock = threading.Lock()

    def read(n: int) -> tuple[int, str, str]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return n, threading.current_thread().name, request_id.get()

    async def caller(n: int) -> tuple[int, str, str]:
        request_id.set(f"req-{n}")  # each task has its own context
        return await threads.run(read, n)

    async def run() -> list[tuple[int, str, str]]:
        return await asyncio.gather(*(caller(n) for n in range(8)))

    try:
        answers = asyncio.run(run())
    finally:
        threads.close()
    assert [n for n, _, _ in answers] == list(range(8))
    assert all(name.startswith("read") for _, name, _ in answers)
    assert len({name for _, name, _ in answers}) == 2 and most == 2  # never more than the pool at once
    assert [rid for _, _, rid in answers] == [f"req-{n}" for n in range(8)]  # the caller's context, not a shared one


def test_an_error_reaches_the_caller_and_the_threads_go_on_after_a_close() -> None:
    threads = ReadThreads(1)

    def fail() -> None:
        raise ConnectionError("database away")

    async def run() -> str:
        with pytest.raises(ConnectionError, match="database away"):
            await threads.run(fail)
        return await threads.run(str.upper, "ok")

    try:
        assert asyncio.run(run()) == "OK"
        threads.close()  # as at an app's shutdown: a later start of the app reads again
        assert asyncio.run(threads.run(str.upper, "again")) == "AGAIN"
    finally:
        threads.close()
