"""Views: seeded, on the device, different between the two views, and SCARF draws from the marginals."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from core.augment import build_views
from core.augment.vectors import VectorViews
from core.config import RunConfig, VectorAugmentConfig


def config(modality: str, **augment) -> RunConfig:
    return RunConfig.model_validate({"data": {"modality": modality}, "augment": {"kind": modality, **augment}})


def test_vector_views_are_seeded_and_differ_between_views() -> None:
    bank = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    views = build_views(config("vectors"), bank, 0, None, torch.device("cpu"))
    torch.manual_seed(1)
    first = views.stacked(bank[:8])
    torch.manual_seed(1)
    again = views.stacked(bank[:8])
    assert first.shape == (16, 5) and torch.equal(first, again)
    assert not torch.allclose(first[:8], first[8:])


def test_scarf_replaces_features_with_values_from_their_own_column() -> None:
    bank = torch.arange(40, dtype=torch.float32).reshape(10, 4) * torch.tensor([1.0, 100.0, 1e4, 1e6])
    scarf = VectorViews(VectorAugmentConfig(noise_std=0.0, mask_prob=0.0, scarf_prob=0.9), bank)
    torch.manual_seed(0)
    out = scarf(bank[:3])
    for column in range(4):
        assert set(out[:, column].tolist()) <= set(bank[:, column].tolist())  # never mixed across columns
    assert not torch.equal(out, bank[:3])


def test_image_views_follow_simclr_and_keep_shape_and_range() -> None:
    views = build_views(config("image"), None, 3, None, torch.device("cpu"))
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(2)
    out = views.stacked(x)
    assert out.shape == (12, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out[:6], out[6:])
    grey = build_views(config("image"), None, 1, None, torch.device("cpu"))
    assert grey.stacked(torch.rand(4, 1, 8, 8)).shape == (8, 1, 32, 32)  # resized to the model's image size


class _CountOperators(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's signature
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_image_views_run_as_many_operators_at_any_batch_size() -> None:
    """On a GPU most operators are kernel launches: a per-image loop (kornia's default "slice" crop, ~8 operators
    an image) made a training step's launches grow with the batch."""
    views = build_views(config("image"), None, 1, None, torch.device("cpu"))
    calls = {}
    for batch in (4, 128):
        torch.manual_seed(0)
        with _CountOperators() as count:
            views.stacked(torch.rand(batch, 1, 8, 8))
        calls[batch] = count.calls
    assert calls[128] <= calls[4] + 50, calls


def test_text_views_are_dropout_copies_or_given_pairs() -> None:
    def tokenize(texts, device):
        return {"input_ids": torch.tensor([[len(t)] for t in texts]), "attention_mask": torch.ones(len(texts), 1)}

    dropout = build_views(config("text"), None, 0, tokenize, torch.device("cpu"))
    assert dropout.stacked(["a", "bb"])["input_ids"].flatten().tolist() == [1, 2, 1, 2]
    pairs = build_views(config("text", mode="pairs"), None, 0, tokenize, torch.device("cpu"))
    assert pairs.stacked(["a", "bb"], ["ccc", "dddd"])["input_ids"].flatten().tolist() == [1, 2, 3, 4]
