"""The micro-batcher's concurrent passes and the single-flight TTL cache, driven directly on an event loop."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from api.embeddings.batcher import MicroBatcher
from api.embeddings.cache import ModelCache
from api.embeddings.lone import LoneThreads
from api.threads import ReadThreads
from api.ttlcache import TTLCache
from core.data.records import InputSpec
from tests.core.test_tracing import checkpoint


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Forward threads set torch's thread count, which is process-wide: give the next tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class Recorder:
    """A forward pass that doubles its inputs, slowly, and records how many passes overlapped."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds, self.lock = seconds, threading.Lock()
        self.running = self.most_running = 0
        self.sizes: list[int] = []
        self.threads: list[int] = []  # intra-op threads of each pass

    def __call__(self, inputs: list[float]) -> tuple[torch.Tensor, ...]:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.sizes.append(len(inputs))
            self.threads.append(torch.get_num_threads())
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        if any(x < 0 for x in inputs):
            raise ValueError("negative input")
        x = torch.tensor(inputs)
        return x * 2, torch.ones(len(inputs))


def test_two_passes_run_side_by_side_and_every_caller_gets_its_own_rows() -> None:
    embed = Recorder()
    batcher = MicroBatcher(embed, max_batch=64, max_wait_ms=0, workers=2, threads=1, split_at=4)

    async def run() -> list[tuple[torch.Tensor, ...]]:
        return await asyncio.gather(*[batcher.submit([float(i), float(i) + 0.5]) for i in range(40)])

    results = asyncio.run(run())
    for i, (out, counts) in enumerate(results):
        assert out.tolist() == [2.0 * i, 2.0 * i + 1.0] and counts.tolist() == [1.0, 1.0]
    assert embed.most_running == 2  # never more than ``workers``, and both used under load
    assert embed.sizes == [40, 40]  # the two free threads share what waits, rather than one taking 64
    assert set(embed.threads) == {1}  # each forward thread runs with its share of the cores


def test_a_second_pass_waits_for_the_loads_fair_share() -> None:
    embed = Recorder(seconds=0.1)
    batcher = MicroBatcher(embed, max_batch=64, max_wait_ms=0, workers=3, threads=1, split_at=8)

    async def run() -> None:
        first = asyncio.ensure_future(batcher.submit([float(i) for i in range(16)]))  # 16 in flight: 2 passes of 8
        await asyncio.sleep(0.02)
        # a thread is free, but 3 inputs are fewer than the load's share (16 / 3 threads): they wait for the passes
        await asyncio.gather(first, *[batcher.submit([2.0]) for _ in range(3)])

    asyncio.run(run())
    assert embed.sizes == [8, 8, 3] and embed.most_running == 2


def test_at_light_load_a_second_pass_starts_with_fewer_inputs() -> None:
    embed = Recorder(seconds=0.1)
    batcher = MicroBatcher(embed, max_batch=64, max_wait_ms=0, workers=2, threads=1, split_at=8)

    async def run() -> None:
        first = asyncio.ensure_future(batcher.submit([1.0]))
        await asyncio.sleep(0.02)  # 4 in flight: 2 each is the fair share, so the 3 waiting start beside the first
        await asyncio.gather(first, *[batcher.submit([2.0]) for _ in range(3)])

    asyncio.run(run())
    assert embed.sizes == [1, 3] and embed.most_running == 2


def test_no_pass_takes_more_than_the_fair_share_while_another_runs() -> None:
    """Taking all that waits locked 32 clients into a pass of 26 alone and a pass of 6 that never met it."""
    embed = Recorder(seconds=0.1)
    batcher = MicroBatcher(embed, max_batch=64, max_wait_ms=0, workers=2, threads=1, split_at=8)

    async def run() -> None:
        six = asyncio.ensure_future(batcher.submit([float(i) for i in range(6)]))
        await asyncio.sleep(0.02)  # the pass of 6 runs; 26 more arrive: 32 in flight, a fair share of 16
        await asyncio.gather(six, *[batcher.submit([1.0]) for _ in range(26)])

    asyncio.run(run())
    assert embed.sizes == [6, 16, 10] and embed.most_running == 2


def test_the_fair_share_follows_the_load_down() -> None:
    embed = Recorder(seconds=0.05)
    batcher = MicroBatcher(embed, max_batch=64, max_wait_ms=0, workers=2, threads=1, split_at=8, load_window_s=0.1)

    async def burst_then_light() -> None:
        await batcher.submit([float(i) for i in range(32)])  # a peak of 32 in flight: a second pass waits for 8
        assert batcher._fair_share() == 16 and batcher._start_at() == 8
        await asyncio.sleep(0.25)  # two windows later the peak is forgotten
        embed.most_running = 0
        first = asyncio.ensure_future(batcher.submit([1.0]))
        await asyncio.sleep(0.02)
        await asyncio.gather(first, batcher.submit([2.0]), batcher.submit([3.0]))

    asyncio.run(burst_then_light())
    assert embed.sizes[-2:] == [1, 2] and embed.most_running == 2


def test_passes_beside_others_run_on_their_share_and_each_thread_count_is_tried_alone_first() -> None:
    embed = Recorder(seconds=0.1)
    batcher = MicroBatcher(embed, max_batch=64, max_wait_ms=0, workers=2, threads=1, split_at=8)

    async def run() -> None:
        await batcher.submit([1.0])  # one client: nobody to share the cores with
        first = asyncio.ensure_future(batcher.submit([1.0]))  # alone when it starts
        await asyncio.sleep(0.02)
        await asyncio.gather(first, *[batcher.submit([2.0]) for _ in range(3)])  # now 4 in flight
        await batcher.submit([3.0])  # alone again, but the recent load was 4: one share

    asyncio.run(run())
    assert embed.sizes == [1, 1, 3, 1] and embed.threads == [2, 1, 1, 1]  # every core first, then one share


def test_a_pass_alone_can_be_kept_on_its_share() -> None:
    embed = Recorder(seconds=0.02)
    batcher = MicroBatcher(embed, max_batch=64, max_wait_ms=0, workers=2, threads=1, split_at=8, alone_threads=(1,))

    async def run() -> None:
        await batcher.submit([1.0])
        await batcher.submit([2.0])

    asyncio.run(run())
    assert embed.sizes == [1, 1] and embed.threads == [1, 1]


def test_the_thread_count_of_a_pass_alone_is_the_fastest_lately_and_others_are_tried_now_and_then() -> None:
    lone = LoneThreads((2, 1), explore=0.1, seed=0)
    assert [lone.pick(1), lone.pick(1)] == [2, 2]  # untried counts first, in order: none observed yet
    lone.observe(1, 2, 0.030)
    assert lone.pick(1) == 1
    lone.observe(1, 1, 0.010)
    picks = [lone.pick(1) for _ in range(1000)]
    assert 40 < picks.count(2) < 160  # explores about one pass in ten; the rest run on the faster
    lone.observe(8, 2, 0.008)  # a pass of 8 inputs is of another size class: 1 thread untried there
    assert lone.pick(8) == 1
    assert lone.means[1, 1] == 0.010 and lone.means[1, 2] == 0.030  # the one-input class's means untouched by it
    lone.observe(8, 1, 0.016)  # seconds per input: 2 ms against 1 ms on 2 threads
    assert [lone.pick(8) for _ in range(1000)].count(2) > 800


def test_a_thread_count_that_becomes_faster_is_noticed_and_one_that_becomes_slower_is_left() -> None:
    lone = LoneThreads((2, 1), explore=0.1, smoothing=0.25, seed=1)
    speed = {1: 0.010, 2: 0.030}  # seconds a one-input pass takes on each count

    def passes(n: int) -> list[int]:
        picked = []
        for _ in range(n):
            threads = lone.pick(1)
            lone.observe(1, threads, speed[threads])
            picked.append(threads)
        return picked

    assert passes(60)[-40:].count(1) >= 30
    speed = {1: 0.030, 2: 0.010}  # the machine changed: both cores are now the faster
    assert passes(100)[-40:].count(2) >= 30


def test_a_pass_alone_follows_the_thread_count_whose_passes_ran_faster_on_its_forward_thread() -> None:
    seconds = {1: 0.004, 2: 0.016}
    threads_seen: list[int] = []

    def embed(inputs: list[float]) -> tuple[torch.Tensor, ...]:
        threads_seen.append(torch.get_num_threads())
        time.sleep(seconds[torch.get_num_threads()])
        return (torch.tensor(inputs),)

    batcher = MicroBatcher(embed, max_batch=64, max_wait_ms=0, workers=2, threads=1, split_at=8)
    batcher.lone.random.seed(0)  # which passes explore

    async def one_client(requests: int) -> None:
        for _ in range(requests):
            await batcher.submit([1.0])

    asyncio.run(one_client(40))
    assert threads_seen[:2] == [2, 1] and threads_seen[-30:].count(1) >= 24
    seconds = {1: 0.016, 2: 0.004}
    asyncio.run(one_client(160))  # 1 thread's mean rises to 2 threads' old one: the next exploring pass tips it
    assert threads_seen[-30:].count(2) >= 24


def test_a_freed_thread_starts_its_next_pass_before_the_callers_it_answered_resume() -> None:
    """Each answered caller renders and sends its answer on the event loop; the next pass must not wait for that."""
    starts: list[float] = []

    def embed(inputs: list[float]) -> tuple[torch.Tensor, ...]:
        starts.append(time.perf_counter())
        time.sleep(0.05)
        return torch.tensor(inputs), torch.ones(len(inputs))

    batcher = MicroBatcher(embed, max_batch=64, max_wait_ms=0, workers=1, threads=1, split_at=1)
    resumed: list[float] = []

    async def answered_then_busy() -> None:
        await batcher.submit([1.0])
        resumed.append(time.perf_counter())
        time.sleep(0.2)  # the caller's own work on the event loop (rendering, sending)

    async def run() -> None:
        first = asyncio.ensure_future(answered_then_busy())
        await asyncio.sleep(0.01)  # the first pass runs; the next input waits for the thread
        await asyncio.gather(first, batcher.submit([2.0]))

    asyncio.run(run())
    assert len(starts) == 2 and starts[1] < resumed[0] + 0.1, (starts, resumed)


def test_with_a_wait_a_pass_waits_for_company_up_to_that_long() -> None:
    embed = Recorder(seconds=0.01)
    batcher = MicroBatcher(embed, max_batch=64, max_wait_ms=100, workers=1, threads=1, split_at=4)

    async def run() -> float:
        await batcher.submit([0.0] * 4)  # a load of 4: a pass waits for 4, up to 100 ms
        first = asyncio.ensure_future(batcher.submit([1.0]))
        await asyncio.sleep(0.03)  # within that wait: the next input joins the same pass
        began = time.perf_counter()
        await asyncio.gather(first, batcher.submit([2.0]))
        return time.perf_counter() - began

    waited = asyncio.run(run())
    assert embed.sizes == [4, 2] and waited >= 0.05, (embed.sizes, waited)  # nobody else came: it ran at 100 ms


def test_a_lone_request_of_many_inputs_is_shared_by_the_threads() -> None:
    embed = Recorder(seconds=0.1)
    batcher = MicroBatcher(embed, max_batch=64, max_wait_ms=0, workers=2, threads=1, split_at=8)

    async def run() -> tuple[torch.Tensor, ...]:
        return await batcher.submit([float(i) for i in range(50)])

    out, counts = asyncio.run(run())
    assert out.tolist() == [2.0 * i for i in range(50)] and len(counts) == 50  # rows back in order
    assert embed.sizes == [25, 25] and embed.most_running == 2 and embed.threads == [1, 1]


def test_no_pass_exceeds_max_batch_and_a_part_that_does_not_fit_heads_the_next() -> None:
    embed = Recorder(seconds=0.01)
    batcher = MicroBatcher(embed, max_batch=5, max_wait_ms=0, workers=1, threads=1, split_at=2)

    async def run() -> list[tuple[torch.Tensor, ...]]:
        return await asyncio.gather(batcher.submit([1.0, 2.0, 3.0]), batcher.submit([4.0, 5.0, 6.0]),
                                    batcher.submit([float(i) for i in range(12)]))  # fmt: skip

    first, second, third = asyncio.run(run())
    assert first[0].tolist() == [2.0, 4.0, 6.0] and second[0].tolist() == [8.0, 10.0, 12.0]
    assert third[0].tolist() == [2.0 * i for i in range(12)]
    assert embed.sizes == [3, 3, 5, 5, 2]  # 3 + 3 > 5: the second part waits for the next pass, in order


def test_a_failing_pass_fails_its_callers_only_and_the_batcher_goes_on() -> None:
    embed = Recorder(seconds=0.01)
    batcher = MicroBatcher(embed, max_batch=8, max_wait_ms=0, workers=1, threads=1)

    async def run() -> tuple[list, torch.Tensor]:
        failed = await asyncio.gather(batcher.submit([-1.0]), batcher.submit([3.0]), return_exceptions=True)
        later = await batcher.submit([4.0])
        return failed, later[0]

    failed, later = asyncio.run(run())
    assert all(isinstance(f, ValueError) for f in failed)  # one pass held both
    assert later.tolist() == [8.0]


def test_a_model_the_cache_evicts_lets_go_of_its_memory_and_forward_threads(tmp_path) -> None:
    config = {"data": {"modality": "vectors"}, "model": {"kind": "mlp", "hidden_dim": 16, "output_dim": 8}}
    paths = [checkpoint(tmp_path / str(i), config, InputSpec("vectors", features=4)) for i in range(3)]
    rows = [np.zeros(4, dtype=np.float32)] * 20  # shared out between both forward threads

    def forward_threads() -> int:
        return sum(t.name.startswith("forward-") for t in threading.enumerate())

    cache = ModelCache(size=1, max_batch=64, max_wait_ms=0.0, workers=2)

    async def run() -> list[weakref.ref]:
        models = []
        for i, path in enumerate(paths):
            served = await cache.get(str(i), path, "fp32")
            assert (await served.batcher.submit(rows))[0].shape == (20, 8)
            models.append(weakref.ref(served.embedder.model))
            del served
        assert list(cache.models) == [("2", "fp32")]
        return models

    before = forward_threads()
    models = asyncio.run(run())
    deadline = time.monotonic() + 10
    while forward_threads() > before + 2 and time.monotonic() < deadline:  # only the last model's two remain
        time.sleep(0.05)
    assert forward_threads() == before + 2
    assert [m() is None for m in models] == [True, True, False]  # no collection needed: nothing else holds them


def test_concurrent_misses_share_one_lookup_and_answers_expire() -> None:
    calls: list[str] = []

    def lookup(key: str) -> str | None:
        calls.append(key)
        time.sleep(0.05)
        return None if key == "unknown" else key.upper()

    async def run() -> None:
        cache: TTLCache[str] = TTLCache(0.2, ReadThreads(4))
        assert await asyncio.gather(*[cache.get("a", lambda: lookup("a")) for _ in range(20)]) == ["A"] * 20
        assert calls == ["a"]
        assert await cache.get("a", lambda: lookup("a")) == "A" and calls == ["a"]  # served from memory
        assert await cache.get("unknown", lambda: lookup("unknown")) is None
        assert await cache.get("unknown", lambda: lookup("unknown")) is None
        assert calls.count("unknown") == 2  # a None answer is never kept
        await asyncio.sleep(0.25)
        assert await cache.get("a", lambda: lookup("a")) == "A" and calls.count("a") == 2  # expired: asked again

    asyncio.run(run())


def test_a_failed_lookup_reaches_every_waiter_and_is_not_kept() -> None:
    attempts = []

    def lookup() -> str:
        attempts.append(1)
        time.sleep(0.02)
        if len(attempts) == 1:
            raise ConnectionError("database away")
        return "ok"

    async def run() -> None:
        cache: TTLCache[str] = TTLCache(60, ReadThreads(2))
        results = await asyncio.gather(*[cache.get("k", lookup) for _ in range(5)], return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results) and len(attempts) == 1
        assert await cache.get("k", lookup) == "ok"

    asyncio.run(run())


def test_ttl_zero_keeps_nothing() -> None:
    calls = []

    async def run() -> None:
        cache: TTLCache[int] = TTLCache(0.0, ReadThreads(1))
        for _ in range(3):
            assert await cache.get("k", lambda: calls.append(1) or len(calls)) == len(calls)

    asyncio.run(run())
    assert len(calls) == 3
