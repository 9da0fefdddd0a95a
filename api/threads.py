"""The few threads an API process runs its hot blocking reads in (status polls, key and model lookups).

A read handed to a thread and back is the costliest step of a status poll after the read itself: anyio's
``to_thread.run_sync`` under a capacity limiter (a cancel scope, the limiter, its own worker queue and wake-ups)
took 132-137 us of CPU a call on the 2-core Zen 1 VM, the event loop's ``run_in_executor`` on a pool of its own
58-59 us (bench/api.py's ``read_hop``: a no-op, 8 concurrent callers, 10 alternating pairs of rounds, three
runs); status polls end to end, in turns with the code before: 785-860 against 725-780 per s (bench/RESULTS.md
"The AMD EPYC VM of family 23 model 1"). The pool's size is the limit: on a few cores, more read threads than
cores only trade the GIL back and forth, and heavy routes (uploads, projections) run in Starlette's own threads,
so they never delay a poll.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

T = TypeVar("T")


class ReadThreads:
    """``threads`` threads for blocking reads; :meth:`run` awaits one call in them. Used on one event loop."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.executor: ThreadPoolExecutor | None = None  # started by the first call after construction or close

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` in a read thread, with the caller's context variables (its request id, for logs).

        If the caller is cancelled (its client left), the call still runs to its end in its thread, so a read
        always gives its connection back; only its answer is dropped.
        """
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="read")
        call = partial(contextvars.copy_context().run, function, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def close(self) -> None:
        """Let the threads end once their calls are done (at the app's shutdown); a later call starts new ones."""
        executor, self.executor = self.executor, None
        if executor is not None:
            executor.shutdown(wait=False)
