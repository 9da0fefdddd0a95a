"""Micro-batching: concurrent requests to one model share forward passes.

Requests queue up; whenever something changes (inputs arrive, a pass ends, a wait for company ends) the batcher
starts what passes it can on idle forward threads, each with what is waiting (after up to ``max_wait_ms`` for
company) up to ``max_batch`` inputs, so the event loop keeps accepting requests while they run. Up to ``workers``
passes run at once, each on its own share of the cores. When several threads are free, the waiting inputs are shared
out between them (a request of many inputs is cut into parts for this, so a lone request of 32 texts is answered
~1.7x sooner than in one pass). Each pass hands every request its rows.

Both rules below follow the load's fair share: the most inputs in the batcher at once (waiting or in a pass) over
the last second or two, over ``workers``.

* A pass starts beside a running one only once the fair share waits (at most ``split_at``), so that splitting the
  work never leaves the passes with crumbs. Eight clients each keep one input in flight, so a second pass starts
  with 4 of them beside a running pass of 4; a fixed threshold of 8 left one thread running passes of 8 and the
  other core idle (bench/serve.py on the 2-core VM: 209 vs 360 requests/s).
* No pass takes more than the fair share while others could run. Taking everything that waited could lock the
  load into two groups that never meet: with 32 clients, a pass of 26 ran alone while the 6 answered by a short
  pass waited for the threshold of 8, one core idle for seconds (300 instead of 480 requests/s).

A pass that carries the whole recent load (one client, nothing else running or waiting) may run on every core
instead: its latency is what one client sees, and there is nobody for it to stall. Whether every core or one
share is faster for it depends on the machine, and changes on the same VM within minutes: :mod:`api.embeddings.lone`
runs each pass alone on the thread count whose recent lone passes were fastest.

Why several passes, each on fewer cores, under load: one pass spread over every core synchronises its threads
at each operator, so a core taken for a moment by the event loop (parsing, answering) stalls all of them;
passes on one thread each never wait for each other. On the 2-core development machine two one-thread passes
embed 1.3-1.7x what one two-thread pass does (bench/serve.py measures both layouts for its raw limit).

A pass's outputs become NumPy arrays on its forward thread, so that what the event loop does for each caller (its
rows, joined when its request was cut into parts) is slicing views: as torch tensors, slicing, joining and reading
them back cost ~17 us of event-loop CPU a request against ~2 us.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from api.embeddings.lone import LoneThreads


class MicroBatcher:
    """Batches calls of ``embed(list_of_inputs) -> arrays with B rows each`` across concurrent callers.

    Args:
        embed: the forward pass: its outputs (tensors on the CPU or arrays), each with a row per input.
        max_batch: most inputs in one pass.
        max_wait_ms: how long a pass with fewer inputs than the load's fair share waits for more (0: it takes what
            queued while the threads were busy).
        workers: passes that may run at once, each on its own thread.
        threads: intra-op threads of each pass beside others.
        alone_threads: the intra-op thread counts a pass that carries the whole recent load may run on, the
            fastest lately chosen for each (:class:`~api.embeddings.lone.LoneThreads`; default every core, then
            one share: ``(workers * threads, threads)``).
        split_at: the most inputs that must be waiting before a pass starts beside a running one (fewer when
            fewer are in flight: see the module docstring), and the smallest part a request is cut into.
        on_batch: called with (inputs, seconds, threads of a pass alone or None) of each pass, for metrics.
        load_window_s: the recent load is the peak of the current and the previous window of this length.
    """

    def __init__(
        self, embed: Callable[[list[Any]], tuple[Any, ...]], max_batch: int, max_wait_ms: float,
        workers: int = 1, threads: int = 1, split_at: int = 8,
        on_batch: Callable[[int, float, int | None], None] | None = None, load_window_s: float = 1.0,
        alone_threads: Sequence[int] | None = None,
    ) -> None:  # fmt: skip
        self.embed, self.max_batch, self.max_wait = embed, max_batch, max_wait_ms / 1000.0
        self.workers, self.threads = workers, threads
        self.lone = LoneThreads(alone_threads or (workers * threads, threads))
        self.on_batch = on_batch
        # Each pass stays on one thread: torch's intra-op (OpenMP) team belongs to the calling thread. One executor
        # per thread, so that passes alone always run on the first: a single team of helpers on every core
        # (two such teams spin-waited against each other between passes).
        self.executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"forward-{i}",
                                             initializer=torch.set_num_threads, initargs=(threads,))
                          for i in range(workers)]  # fmt: skip
        self.idle = list(range(workers))  # executors without a pass
        self.waiting: deque[tuple[list[Any], asyncio.Future]] = deque()  # parts of requests, in order
        self.running = 0
        self.queued_inputs = 0
        self.passing_inputs = 0  # inputs in running passes
        self.load = PeakLoad(load_window_s)  # the most inputs in the batcher at once, lately
        self.split_at = split_at
        self.dispatch_soon = False  # a dispatch is scheduled for the end of this event-loop iteration
        self.wait: asyncio.TimerHandle | None = None  # with max_wait: the end of the next pass's wait for company
        self.waited = False  # that wait is over: the next pass starts with what there is
        self.batch_sizes: list[int] = []  # recent forward-pass sizes, for metrics

    async def submit(self, inputs: list[Any]) -> tuple[np.ndarray, ...]:
        """Run ``embed`` on ``inputs`` (in batches of at most ``max_batch``, shared with other callers); its outputs'
        rows for them, as NumPy arrays (views into the pass's outputs when the inputs were not cut into parts)."""
        loop = asyncio.get_running_loop()
        futures = []
        # parts small enough for every free thread to take one, never smaller than split_at
        size = min(self.max_batch, max(self.split_at, math.ceil(len(inputs) / self.workers)))
        for start in range(0, len(inputs), size):
            part, future = inputs[start : start + size], loop.create_future()
            self.waiting.append((part, future))
            self.queued_inputs += len(part)
            self.load.observe(self.queued_inputs + self.passing_inputs)
            futures.append(future)
        if not self.dispatch_soon:  # after this iteration's other callers, so that requests read together batch
            self.dispatch_soon = True
            loop.call_soon(self._dispatch)
        results = [await future for future in futures]
        if len(results) == 1:
            return results[0]
        return tuple(np.concatenate(columns) for columns in zip(*results, strict=True))

    def _dispatch(self) -> None:
        """Start every pass that can start now. Runs on the event loop when inputs arrive (once per iteration),
        when a pass ends (at once, before its callers are answered) and when a wait for company ends."""
        self.dispatch_soon = False
        loop = asyncio.get_running_loop()
        while self.idle and self.waiting and (not self.running or self.queued_inputs >= self._start_at()):
            if self.max_wait and not self.waited and self.queued_inputs < min(self.max_batch, self._fair_share()):
                if self.wait is None:  # fewer than the load's share: wait for company, at most max_wait
                    self.wait = loop.call_later(self.max_wait, self._end_wait)
                return
            limit = self._take()
            if self.wait is not None:
                self.wait.cancel()
            self.wait, self.waited = None, False
            batch, size = [], 0
            while self.waiting and (not batch or size + len(self.waiting[0][0]) <= limit):
                part = self.waiting.popleft()  # a part that does not fit heads the next pass
                batch.append(part)
                size += len(part[0])
            self._start(batch)

    def _end_wait(self) -> None:
        self.wait, self.waited = None, True
        self._dispatch()

    def _fair_share(self) -> int:
        """Inputs a pass should have: the recent peak of inputs in flight over the threads."""
        return max(1, math.ceil(self.load.peak() / self.workers))

    def _start_at(self) -> int:
        """Inputs that must wait before a pass starts beside a running one."""
        return min(self.split_at, self._fair_share())

    def _take(self) -> int:
        """The most inputs the next pass takes (the queue holds its first part still).

        The free threads share what waits, none taking more than the fair share; but what would be left behind too
        few to start beside this pass comes along rather than wait for it to end.
        """
        queued, start_at = self.queued_inputs, self._start_at()
        share = math.ceil(queued / (self.workers - self.running))
        limit = max(start_at, min(share, self._fair_share()))
        return min(self.max_batch, queued if queued - limit < start_at else limit)

    def _start(self, batch: list[tuple[list[Any], asyncio.Future]]) -> None:
        """Run one pass on an idle thread; :meth:`_finished` follows on the event loop."""
        size = sum(len(items) for items, _ in batch)
        alone = self.running == 0 and self.queued_inputs == size and self.load.peak() <= size
        threads = self.lone.pick(size) if alone else self.threads
        executor = 0 if alone else max(self.idle)  # alone: the first (every executor is idle then)
        self.idle.remove(executor)
        self.queued_inputs -= size
        self.passing_inputs += size
        self.running += 1
        inputs = [x for items, _ in batch for x in items]
        loop, start = asyncio.get_running_loop(), time.perf_counter()
        job = self.executors[executor].submit(self._forward, inputs, threads)

        def finished(job: Future) -> None:  # on the forward thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._finished, batch, len(inputs), job, executor, start, alone, threads)

        job.add_done_callback(finished)

    def _finished(self, batch: list[tuple[list[Any], asyncio.Future]], size: int, job: Future, executor: int,
                  start: float, alone: bool, threads: int) -> None:  # fmt: skip
        """A pass ended: its thread takes the next one at once, then its callers get their rows (or its error).

        In that order because each answered caller renders and sends its answer on the event loop (~0.15 ms): on
        the 2-core VM at 32 clients, starting the next pass after them kept a freed thread idle 1.7 ms (median)
        with its next inputs queued (bench/serve.py, bench/RESULTS.md "Serving").
        """
        self.idle.append(executor)
        self.running -= 1
        self.passing_inputs -= size
        self._dispatch()
        error = job.exception()
        if error is not None:  # every caller of this pass gets the error, none hangs
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        out, seconds = job.result()
        if alone:
            self.lone.observe(size, threads, seconds)
        self.batch_sizes = (self.batch_sizes + [size])[-1000:]
        if self.on_batch is not None:
            self.on_batch(size, time.perf_counter() - start, threads if alone else None)
        row = 0
        for items, future in batch:
            if not future.done():
                future.set_result(tuple(t[row : row + len(items)] for t in out))
            row += len(items)

    def _forward(self, inputs: list[Any], threads: int) -> tuple[tuple[np.ndarray, ...], float]:
        """One pass on this forward thread with ``threads`` intra-op threads (the OpenMP team is per thread), as
        arrays, and its seconds as this thread saw them."""
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        start = time.perf_counter()
        out = tuple(np.asarray(t) for t in self.embed(inputs))
        return out, time.perf_counter() - start


class PeakLoad:
    """The largest value observed over the last one to two windows of ``window_s`` (a decaying maximum)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.current = self.previous = 0
        self.window_end = 0.0

    def _roll(self) -> None:
        now = time.monotonic()
        if now >= self.window_end:
            # the window just ended becomes the previous one; after a quiet window, nothing is remembered
            self.previous = self.current if now < self.window_end + self.window_s else 0
            self.current, self.window_end = 0, now + self.window_s

    def observe(self, value: int) -> None:
        self._roll()
        self.current = max(self.current, value)

    def peak(self) -> int:
        self._roll()
        return max(self.current, self.previous)
