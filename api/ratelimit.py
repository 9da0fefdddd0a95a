"""Per-key rate limits (token buckets, per API process), answering 429 with Retry-After."""

from __future__ import annotations

import math
import threading
import time

from api.errors import RateLimited


class RateLimiter:
    """``per_minute`` requests per key, with bursts up to the same number.

    Buckets live in the API process: with R replicas behind a balancer a key gets up to R times the rate.
    """

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def check(self, key: str, what: str) -> None:
        """Take one token for ``key`` or raise :class:`RateLimited`."""
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self.buckets[key] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise RateLimited(
                    f"rate limit for {what} reached; retry in {wait} s", headers={"Retry-After": str(wait)}
                )
            self.buckets[key] = (tokens - 1.0, now)
