"""Answers of a blocking lookup (a key check, a deployed-model lookup) kept for a few seconds per process.

When an entry expires under load, every request that arrives before the new answer would otherwise start its
own lookup: dozens of threads and database round trips at once, each taking cores from the work that matters
(bench/serve.py saw 20 threads spawned this way). Concurrent misses of one key share a single lookup instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from api.threads import ReadThreads

V = TypeVar("V")


class TTLCache(Generic[V]):
    """Values by key for ``ttl_s`` seconds; a miss runs ``lookup`` in one of ``threads``.

    ``None`` answers (an unknown key) and errors are never kept: the next request asks again.

    Args:
        ttl_s: how long an answer is served from memory (0: never kept, concurrent misses still share).
        threads: the threads lookups run in.
        max_entries: the cache is emptied when it grows past this (keys are per caller; cheap to refill).
    """

    def __init__(self, ttl_s: float, threads: ReadThreads, max_entries: int = 10_000) -> None:
        self.ttl_s, self.threads, self.max_entries = ttl_s, threads, max_entries
        self.entries: dict[Hashable, tuple[V, float]] = {}
        self.inflight: dict[Hashable, asyncio.Task] = {}

    async def get(self, key: Hashable, lookup: Callable[[], V | None]) -> V | None:
        """The cached answer for ``key``, or the answer of one ``lookup()`` shared by everyone missing now."""
        hit = self.entries.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        task = self.inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(key, lookup))
            # the callers re-raise a failure; if every one of them left first, asyncio must not log it as unseen
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self.inflight[key] = task
        # shield: a caller that disconnects must not cancel the lookup the others are waiting for
        return await asyncio.shield(task)

    async def _load(self, key: Hashable, lookup: Callable[[], V | None]) -> V | None:
        try:
            value = await self.threads.run(lookup)
        finally:
            del self.inflight[key]
        if value is not None and self.ttl_s > 0:
            if len(self.entries) >= self.max_entries:
                self.entries.clear()
            self.entries[key] = (value, time.monotonic() + self.ttl_s)
        return value
