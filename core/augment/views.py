"""Turning a batch of records into model inputs: two augmented views for training, plain inputs for eval.

Text has no pixel-level augmentation: SimCSE (Gao et al. 2021, "SimCSE", section 3) passes the same sentence
twice and lets dropout make the two views; anchor/positive datasets use the given pairs, with the other
pairs of the batch as negatives.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from core.augment.image import ImageViews
from core.augment.vectors import VectorViews
from core.config import ImageAugmentConfig, RunConfig, TextAugmentConfig, VectorAugmentConfig


class Views(Protocol):
    """Makes model inputs from a batch of raw inputs (tensors for vectors/images, strings for text)."""

    dropout_makes_views: bool  # True when the two views are the same input and only dropout tells them apart

    def stacked(self, raw: Any, positives: Any = None) -> Any:
        """Both views of a batch of B records as one input of 2B rows: view a first, then view b."""
        ...

    def plain(self, raw: Any) -> Any:
        """The batch without augmentation (evaluation, serving)."""
        ...


class TensorViews:
    """Views of vectors or images: two independent draws of the same random transform."""

    dropout_makes_views = False

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def stacked(self, raw: Tensor, positives: Any = None) -> Tensor:
        return torch.cat([self.transform(raw), self.transform(raw)])

    def plain(self, raw: Tensor) -> Tensor:
        return raw


class TextViews:
    """Dropout-only views (SimCSE) or given positives; ``tokenize`` comes from the text encoder."""

    def __init__(self, config: TextAugmentConfig, tokenize: Any, device: torch.device) -> None:
        self.mode = config.mode
        self.dropout_makes_views = config.mode == "dropout"
        self.tokenize = tokenize
        self.device = device

    def stacked(self, raw: list[str], positives: list[str] | None = None) -> Any:
        if self.mode == "pairs":
            if positives is None:
                raise ValueError("augment.mode 'pairs' needs a dataset with anchor and positive columns")
            return self.tokenize(raw + positives, self.device)
        return self.tokenize(raw + raw, self.device)  # dropout in train mode makes the two copies differ

    def plain(self, raw: list[str]) -> Any:
        return self.tokenize(raw, self.device)


def build_views(config: RunConfig, bank: Tensor | None, channels: int, tokenize: Any, device: torch.device) -> Views:
    """The views for a run.

    Args:
        config: the run config (its ``augment`` slice, and the image size of a ResNet).
        bank: (N, F) training vectors for SCARF's marginals (vectors only).
        channels: image channels (images only).
        tokenize: the text encoder's tokenizer function (text only).
        device: the training device.
    """
    augment = config.augment
    if isinstance(augment, VectorAugmentConfig):
        return TensorViews(VectorViews(augment, bank))
    if isinstance(augment, ImageAugmentConfig):
        return TensorViews(ImageViews(augment, config.model.image_size, channels))
    return TextViews(augment, tokenize, device)
