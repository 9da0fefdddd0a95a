"""How many intra-op threads a forward pass alone runs on: the count whose recent lone passes ran fastest.

A pass alone (one client, nobody else served) can run on every core or on one thread's share of them. Which is
faster is not a property of the code: it depends on the VM, and on the same VM it changes within minutes.
bench/serve.py times one traced one-input pass of all-MiniLM-L6-v2 on one thread and on both cores of the 2-core
development VM before each of its latency rounds: on a Zen 1 VM both cores took 17.7-22.8 ms against one thread's
21.8-24.8; on a Zen 4 VM both cores took 13.5-23.2 ms against 12.2-14.6; on a Zen 3 VM both cores took 15.2 ms
against 16.6 in the first round and 22.4-32.7 against 16.2-16.6 in the last three, a few minutes later, and the
server, whose lone pass was then always on both cores, answered one client at a p50 of 32.5-37.8 ms (bench/RESULTS.md,
"The second Zen 3 VM"). A bf16 pass, with its many short casts, took 9.8 ms on both cores of the first Zen 4 VM
against 6.1-6.8 on one.

So the batcher keeps, for each size of lone pass (powers of two), an exponentially weighted mean of the seconds
per input that the lone passes took on each thread count, runs the next lone pass on the count whose mean is
lowest, and now and then (with probability ``explore``) on another, so that a count that has become faster is
noticed. Each count is tried once first. The choice adapts to the machine as it is now, at the cost of one lone
pass in ``1 / explore`` on a count that may be slower.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


class LoneThreads:
    """Chooses the intra-op thread count of each pass alone among ``choices``, by how fast recent ones ran.

    Args:
        choices: the thread counts a pass alone may run on, in the order they are first tried.
        explore: the probability that a pass runs on a count other than the fastest lately.
        smoothing: the weight of the newest pass in a count's mean (0-1]: higher follows changes sooner.
        seed: seeds the choice of the passes that explore.
    """

    def __init__(self, choices: Sequence[int], explore: float = 1 / 16, smoothing: float = 0.25,
                 seed: int | None = None) -> None:  # fmt: skip
        if not choices or min(choices) < 1:
            raise ValueError(f"thread counts must be positive and at least one, not {list(choices)}")
        self.choices = tuple(dict.fromkeys(choices))  # in order, without repeats
        self.explore, self.smoothing = explore, smoothing
        self.random = random.Random(seed)
        self.means: dict[tuple[int, int], float] = {}  # (size class, threads) -> seconds per input

    @staticmethod
    def _size_class(inputs: int) -> int:
        return inputs.bit_length()  # 1, 2-3, 4-7, 8-15, ...

    def pick(self, inputs: int) -> int:
        """The thread count for a pass alone of ``inputs`` inputs."""
        if len(self.choices) == 1:
            return self.choices[0]
        size = self._size_class(inputs)
        untried = [n for n in self.choices if (size, n) not in self.means]
        if untried:
            return untried[0]
        fastest = min(self.choices, key=lambda n: self.means[size, n])
        if self.random.random() < self.explore:
            return self.random.choice([n for n in self.choices if n != fastest])
        return fastest

    def observe(self, inputs: int, threads: int, seconds: float) -> None:
        """A pass alone of ``inputs`` inputs took ``seconds`` on ``threads`` threads."""
        key, per_input = (self._size_class(inputs), threads), seconds / max(1, inputs)
        mean = self.means.get(key)
        self.means[key] = per_input if mean is None else mean + self.smoothing * (per_input - mean)
