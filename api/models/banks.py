"""Neighbour banks in memory: a model's training records embedded once, for POST /v1/models/{name}/neighbors.

A bank costs seconds of CPU to build (2,000 records through the model), so requests for one that is not built yet
wait for the one building it rather than each building their own. The route runs in the thread pool, hence
thread locks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Banks(Generic[T]):
    """Banks by key, each built once even when requests for it arrive together; at most ``size`` kept (all are
    dropped when a new one would exceed it, as a redeployment at another precision makes a new key)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: dict[Hashable, T] = {}
        self.building: dict[Hashable, threading.Lock] = {}  # one lock per bank being built
        self.lock = threading.Lock()  # guards both dicts

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The bank of ``key``, built by ``build`` if no request has built it; a failed build is tried again by the
        next request."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                return entry
            gate = self.building.setdefault(key, threading.Lock())
        with gate:  # the first request builds; the others wait here, then find its bank
            with self.lock:
                entry = self.entries.get(key)
            if entry is not None:
                return entry
            try:
                entry = build()
            except BaseException:
                with self.lock:
                    self.building.pop(key, None)
                raise
            with self.lock:  # stored and its lock dropped at once: nobody comes between to build it again
                if len(self.entries) >= self.size:
                    self.entries.clear()
                self.entries[key] = entry
                self.building.pop(key, None)
            return entry
