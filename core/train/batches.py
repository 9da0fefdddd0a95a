"""Records held on the training device, sliced into batches by index without a DataLoader.

Vectors and images are small enough to live on the device whole (no host-to-device copy per step, no loader
workers to starve the step); texts stay as strings and are tokenised per batch by the views.
"""

from __future__ import annotations

from collections.abc import Callable
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

    def moments(self) -> tuple[Tensor, Tensor]:
        """The mean and (unbiased) standard deviation of each feature, ``(F,)``, or image channel, ``(1, C, 1, 1)``,
        over every record as floats (images in [0, 1]): what the encoders standardise their inputs by.

        Two passes over slices of ~4M values in float64, never a float copy of the whole dataset: that copy and
        ``std``'s temporaries took 7.8x the uint8 images' size (4.6 GB more for 1,000 images of 384x512, 9 s), so
        that a GPU holding the dataset needed that much free again before the first step."""
        assert self.tensor is not None
        x = self.tensor
        axes = [0, *range(2, x.dim())]  # all but the feature (channel) axis
        scale = 1 / 255.0 if x.dtype == torch.uint8 else 1.0
        rows = max(1, (1 << 22) // max(1, x[0].numel()))

        def total(of: Callable[[Tensor], Tensor]) -> Tensor:
            return sum(of(x[i : i + rows].double() * scale).sum(dim=axes, keepdim=True) for i in range(0, len(x), rows))

        count = x.numel() // x.shape[1]
        mean = total(lambda part: part) / count
        std = (total(lambda part: (part - mean) ** 2) / max(count - 1, 1)).sqrt()
        if x.dim() == 2:
            mean, std = mean[0], std[0]
        return mean.float(), std.float()

    def sample_index(self, limit: int, seed: int) -> Tensor:
        """A seeded subset of at most ``limit`` record indices, for evaluation."""
        n = len(self)
        if n <= limit:
            return torch.arange(n)
        return torch.as_tensor(np.random.default_rng(seed).choice(n, size=limit, replace=False))
