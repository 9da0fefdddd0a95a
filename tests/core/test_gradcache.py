"""GradCache gives the same parameter gradients as one full-batch step, dropout included."""

from __future__ import annotations

import pytest
import torch

from core.losses import NTXentLoss, grad_cache_step


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 4))


@pytest.mark.parametrize("sub_batch", [1, 3, 7, 64])
def test_grad_cache_equals_full_batch(sub_batch: int) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 12, 6, generator=gen)
    loss = NTXentLoss(0.3)

    full = _encoder().eval()  # dropout differs between one pass and sub-batches, so compare in eval mode
    value = loss(full(x[0]), full(x[1]))
    value.backward()

    cached = _encoder().eval()
    got = grad_cache_step(cached, [x[0], x[1]], lambda z: loss(z[0], z[1]), sub_batch)
    assert torch.allclose(got, value.detach(), atol=1e-6)
    for a, b in zip(full.parameters(), cached.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_grad_cache_replays_dropout_masks() -> None:
    """With dropout on, both passes of a sub-batch must draw the same mask: gradients match a manual replay."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 6, generator=gen)
    loss = NTXentLoss(0.3)

    enc = _encoder().train()
    torch.manual_seed(123)
    got = grad_cache_step(enc, [x[0], x[1]], lambda z: loss(z[0], z[1]), sub_batch_size=8)

    ref = _encoder().train()
    torch.manual_seed(123)
    value = loss(ref(x[0]), ref(x[1]))  # one sub-batch per view: same random draws in the same order
    value.backward()
    assert torch.allclose(got, value.detach(), atol=1e-6)
    for a, b in zip(ref.parameters(), enc.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)
