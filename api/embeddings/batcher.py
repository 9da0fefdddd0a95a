"""Micro-batching: concurrent requests to one model share forward passes.

Requests queue up; a single consumer takes the first, then waits up to ``max_wait_ms`` for more until the
batch holds ``max_batch`` inputs, runs one forward pass in a worker thread (so the event loop keeps
accepting requests), and hands each request its rows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor


class MicroBatcher:
    """Batches calls of ``embed(list_of_inputs) -> tensors with B rows each`` across concurrent callers."""

    def __init__(
        self, embed: Callable[[list[Any]], tuple[Tensor, ...]], max_batch: int, max_wait_ms: float,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:  # fmt: skip
        self.embed, self.max_batch, self.max_wait = embed, max_batch, max_wait_ms / 1000.0
        self.on_batch = on_batch  # (inputs, seconds) of each forward pass, for metrics
        # One thread runs every forward pass: torch's intra-op (OpenMP) pool belongs to the calling thread,
        # and passes hopping across a pool of threads would start competing thread teams on the same cores.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self.queue: asyncio.Queue[tuple[list[Any], asyncio.Future]] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # recent forward-pass sizes, for metrics

    async def submit(self, inputs: list[Any]) -> tuple[Tensor, ...]:
        """Run ``embed`` on ``inputs`` (in batches of at most ``max_batch``, shared with other callers)."""
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        parts = []
        for start in range(0, len(inputs), self.max_batch):
            future: asyncio.Future = asyncio.get_running_loop().create_future()
            await self.queue.put((inputs[start : start + self.max_batch], future))
            parts.append(future)
        results = [await part for part in parts]
        return tuple(torch.cat(columns) for columns in zip(*results, strict=True))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items, future = await self.queue.get()
            batch = [(items, future)]
            size = len(items)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    nxt = self.queue.get_nowait() if self.max_wait == 0 else await asyncio.wait_for(
                        self.queue.get(), max(0.0, deadline - loop.time()))  # fmt: skip
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if size + len(nxt[0]) > self.max_batch:
                    await self._flush(batch)  # keep each pass within max_batch; the newcomer starts the next
                    batch, size = [], 0
                batch.append(nxt)
                size += len(nxt[0])
            await self._flush(batch)

    async def _flush(self, batch: list[tuple[list[Any], asyncio.Future]]) -> None:
        if not batch:
            return
        inputs = [x for items, _ in batch for x in items]
        start = time.perf_counter()
        try:
            out = await asyncio.get_running_loop().run_in_executor(self.executor, self.embed, inputs)
        except Exception as error:  # every caller of this pass gets the error, none hangs
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.batch_sizes = (self.batch_sizes + [len(inputs)])[-1000:]
        if self.on_batch is not None:
            self.on_batch(len(inputs), time.perf_counter() - start)
        start = 0
        for items, future in batch:
            if not future.done():
                future.set_result(tuple(t[start : start + len(items)] for t in out))
            start += len(items)
