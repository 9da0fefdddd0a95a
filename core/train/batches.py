"""Records held on the training device, sliced into batches by index without a DataLoader.

Vectors and images are small enough to live on the device whole (no host-to-device copy per step, no loader
workers to starve the step); texts stay as strings and are tokenised per batch by the views. Images larger than
the model needs are shrunk, antialiased, as they are placed (:func:`working_size`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.data.records import Records
from core.encoders.image import resized

# Images are held at most this many times the model's input side, on their shorter side. A random crop (of at
# least crop_scale_min = 0.2 of the area by default) is then resized by a factor of 0.9 to 2, where bilinear
# sampling does not alias; ImageNet's SimCLR crops 224 from images of about 1.6 times that.
WORKING_SCALE = 2


def working_size(height: int, width: int, image_size: int) -> tuple[int, int]:
    """The (H, W) a training run holds images of ``height`` x ``width`` at, for a model of ``image_size`` inputs:
    their own, or shrunk, aspect kept, to ``WORKING_SCALE * image_size`` on the shorter side."""
    scale = min(1.0, WORKING_SCALE * image_size / min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _placed_images(images: np.ndarray, image_size: int | None, device: torch.device) -> Tensor:
    """(N, C, H, W) images on ``device``, shrunk to :func:`working_size` with an antialiased filter, a slice of
    ~4M values at a time (the full-size images never on the device whole).

    Before, a 384x512 photo stayed that size: every step turned its batch to floats at full size (2.4 MB an image)
    and cut its views from it by bilinear sampling, which reads 4 pixels of the 12 by 16 each view pixel covers;
    sensor noise and fine texture came out as coarse noise, differently in each view."""
    height, width = images.shape[2:]
    size = (height, width) if image_size is None else working_size(height, width, image_size)
    if size == (height, width):
        return torch.as_tensor(images, device=device)  # uint8, 4x smaller than float
    out = torch.empty((len(images), images.shape[1], *size), dtype=torch.from_numpy(images[:0]).dtype, device=device)
    rows = max(1, (1 << 22) // max(1, images[0:1].size))
    for start in range(0, len(images), rows):
        part = torch.as_tensor(images[start : start + rows], device=device).float()
        part = resized(part, size)
        out[start : start + rows] = part.round_().clamp_(0, 255) if out.dtype == torch.uint8 else part
    return out


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
        image_size: the model's input side, for images: those larger are held at :func:`working_size`.
    """

    def __init__(self, records: Records, device: torch.device, image_size: int | None = None) -> None:
        self.records = records
        self.device = device
        self.tensor: Tensor | None = None
        if records.vectors is not None:
            self.tensor = torch.as_tensor(records.vectors, dtype=torch.float32, device=device)
        elif records.images is not None:
            self.tensor = _placed_images(records.images, image_size, device)
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
