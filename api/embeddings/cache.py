"""Deployed models in memory: loaded from storage on first use, at most ``size`` per API process (LRU)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from api.embeddings.batcher import MicroBatcher
from api.metrics import Metrics
from core.inference import TRACED_MODALITIES, Embedder, Precision, native_bf16

log = logging.getLogger("embedtrain.api")

# The cores torch would use, read before any forward thread sets its own (smaller) share: the count is process-wide.
TORCH_THREADS = torch.get_num_threads()


@dataclass
class ServedModel:
    embedder: Embedder
    batcher: MicroBatcher


class ModelCache:
    """LRU of served models keyed by model version id and precision (a redeployment at another precision loads the
    version anew; the old entry ages out)."""

    def __init__(self, size: int, max_batch: int, max_wait_ms: float, workers: int = 1, trace: bool = False,
                 metrics: Metrics | None = None) -> None:  # fmt: skip
        self.size, self.max_batch, self.max_wait_ms, self.workers = size, max_batch, max_wait_ms, workers
        self.trace = trace
        self.metrics = metrics
        self.hits = metrics.cache.labels("hit") if metrics else None
        self.models: OrderedDict[tuple[str, Precision], ServedModel] = OrderedDict()
        self.lock = asyncio.Lock()

    async def get(self, version_id: str, checkpoint: Path, precision: Precision) -> ServedModel:
        """The served model of a version at ``precision``, loading it (in a thread) on a miss."""
        key = (version_id, precision)
        served = self._hit(key)  # a hit needs no lock: nothing awaits between the look-up and the answer
        if served is not None:
            return served
        async with self.lock:  # one load at a time, and a model loaded while this waited is found here
            served = self._hit(key)
            if served is not None:
                return served
            embedder = await asyncio.to_thread(Embedder, checkpoint, "cpu", self.trace, precision)
            if precision == "bf16" and not native_bf16(embedder.device):
                log.warning("model version %s is served in bf16 on a CPU without bf16 units: slower than fp32",
                            version_id)  # fmt: skip
            if self.trace and embedder.modality in TRACED_MODALITIES and embedder.untraced_because:
                log.warning("model version %s is served eager (slower): %s", version_id, embedder.untraced_because)
            threads = max(1, TORCH_THREADS // self.workers)
            batcher = MicroBatcher(embedder.embed_with_usage, self.max_batch, self.max_wait_ms, workers=self.workers,
                                   threads=threads, alone_threads=(TORCH_THREADS, threads),
                                   on_batch=self._observe)  # fmt: skip
            served = ServedModel(embedder, batcher)
            self.models[key] = served
            while len(self.models) > self.size:
                self.models.popitem(last=False)
            if self.metrics:
                self.metrics.cache.labels("miss").inc()
                self.metrics.loaded.set(len(self.models))
            return served

    def _hit(self, key: tuple[str, Precision]) -> ServedModel | None:
        served = self.models.get(key)
        if served is not None:
            self.models.move_to_end(key)
            if self.hits is not None:
                self.hits.inc()
        return served

    def _observe(self, inputs: int, seconds: float, alone_threads: int | None) -> None:
        if self.metrics:
            self.metrics.batch_size.observe(inputs)
            self.metrics.forward.observe(seconds)
            if alone_threads is not None:
                self.metrics.lone_passes.labels(str(alone_threads)).inc()
