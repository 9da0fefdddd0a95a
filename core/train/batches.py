"""Records held on the training device, sliced into batches by index without a DataLoader.

Vectors and images are small enough to live on the device whole (no host-to-device copy per step, no loader
workers to starve the step); texts stay as strings and are tokenised per batch by the views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.data.records import Records


@dataclass
class Batch:
    """One batch of raw inputs: (B, F) or (B, C, H, W) float tensors, or B strings."""

    raw: Any
    positives: list[str] | None
    labels: Tensor | None


class DeviceData:
    """A dataset's records on ``device``.

    Args:
        records: the records.
        device: the training device.
    """

    def __init__(self, records: Records, device: torch.device) -> None:
        self.records = records
        self.device = device
        self.tensor: Tensor | None = None
        if records.vectors is not None:
            self.tensor = torch.as_tensor(records.vectors, dtype=torch.float32, device=device)
        elif records.images is not None:
            self.tensor = torch.as_tensor(records.images, device=device)  # uint8, 4x smaller than float
        self.labels = None if records.labels is None else torch.as_tensor(records.labels, device=device)

    def __len__(self) -> int:
        return len(self.records)

    def batch(self, index: Tensor) -> Batch:
        """The records at ``index`` ((B,) int64 on any device)."""
        labels = None if self.labels is None else self.labels[index.to(self.device)]
        if self.tensor is not None:
            raw = self.tensor[index.to(self.device)]
            if raw.dtype == torch.uint8:
                raw = raw.float().div_(255.0)
            return Batch(raw, None, labels)
        picks = index.tolist()
        texts = [self.records.texts[i] for i in picks]
        positives = None if self.records.positives is None else [self.records.positives[i] for i in picks]
        return Batch(texts, positives, labels)

    def all_floats(self) -> Tensor:
        """Every record as floats ((N, F) vectors or (N, C, H, W) images in [0, 1]), for normalisation stats."""
        assert self.tensor is not None
        return self.tensor.float() / 255.0 if self.tensor.dtype == torch.uint8 else self.tensor

    def sample_index(self, limit: int, seed: int) -> Tensor:
        """A seeded subset of at most ``limit`` record indices, for evaluation."""
        n = len(self)
        if n <= limit:
            return torch.arange(n)
        return torch.as_tensor(np.random.default_rng(seed).choice(n, size=limit, replace=False))
