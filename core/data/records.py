"""The in-memory form of a dataset: what the training loop, evaluation and inference read."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_HELD_OUT = 2  # the fewest held-out records an evaluation runs on: with fewer, the training loop evaluates none


def held_out(n: int, val_fraction: float) -> int:
    """How many of ``n`` records :meth:`Records.split` holds out at ``val_fraction``."""
    return int(round(n * val_fraction))


def short_of_a_batch(n_train: int, batch: int) -> str | None:
    """Why a training split smaller than one batch cannot train (the loop takes full batches only); None if it can."""
    if n_train >= batch:
        return None
    split = f"{n_train} record{'s' * (n_train != 1)}"
    return (f"the training split has {split}, fewer than one batch of train.batch_size={batch}; lower the batch size "
            "or upload more data")  # fmt: skip


@dataclass(frozen=True)
class InputSpec:
    """Shape of a model's input, stored with every checkpoint so the model can be rebuilt to serve it."""

    modality: str
    features: int = 0  # vectors: number of features
    channels: int = 0  # image: channels (1 or 3)
    height: int = 0  # image: the training images' common size, whose aspect an image embedded is cropped to
    width: int = 0  # (0: not recorded, as in checkpoints written before it was; such images are stretched)


@dataclass
class Records:
    """N records of one modality, with optional integer labels.

    Attributes:
        modality: ``"vectors"``, ``"image"`` or ``"text"``.
        vectors: (N, F) float32 feature vectors.
        images: (N, C, H, W) uint8 images, all one size.
        texts: N strings (the anchors when ``positives`` is given).
        positives: N strings paired with ``texts`` (anchor/positive datasets).
        labels: (N,) int64 class indices, or None.
        label_names: class names by index, or None.
    """

    modality: str
    vectors: np.ndarray | None = None
    images: np.ndarray | None = None
    texts: list[str] | None = None
    positives: list[str] | None = None
    labels: np.ndarray | None = None
    label_names: list[str] | None = field(default=None)

    def __len__(self) -> int:
        if self.vectors is not None:
            return len(self.vectors)
        if self.images is not None:
            return len(self.images)
        return len(self.texts or [])

    @property
    def spec(self) -> InputSpec:
        """Input shape for building an encoder."""
        if self.modality == "vectors":
            return InputSpec("vectors", features=int(self.vectors.shape[1]))
        if self.modality == "image":
            _, channels, height, width = self.images.shape
            return InputSpec("image", channels=int(channels), height=int(height), width=int(width))
        return InputSpec("text")

    def take(self, index: np.ndarray) -> Records:
        """The records at ``index``, in that order."""

        def pick(values):
            if values is None:
                return None
            if isinstance(values, list):
                return [values[i] for i in index]
            return values[index]

        return Records(
            modality=self.modality,
            vectors=pick(self.vectors),
            images=pick(self.images),
            texts=pick(self.texts),
            positives=pick(self.positives),
            labels=pick(self.labels),
            label_names=self.label_names,
        )

    def split(self, val_fraction: float, seed: int) -> tuple[Records, Records | None]:
        """A seeded (train, held-out) split; no held-out part when ``val_fraction`` is 0."""
        order = np.random.default_rng(seed).permutation(len(self))
        n_val = held_out(len(self), val_fraction)
        if n_val == 0:
            return self.take(order), None
        return self.take(order[n_val:]), self.take(order[:n_val])
