"""GradCache: contrastive training with a batch larger than fits in memory, with the same gradients.

Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup" (Algorithm 1):

1. embed every sub-batch without a graph and keep only the embeddings;
2. compute the loss on the whole batch of embeddings and its gradient with respect to them (the "cache");
3. embed each sub-batch again, now with a graph, and backpropagate its slice of the cached gradient.

The parameter gradients equal those of one full-batch forward and backward, while activations are held for
one sub-batch at a time. The random state is captured before each sub-batch's first pass and restored for
its second, so dropout (and anything else random in the encoder) draws the same masks both times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

Batch = Tensor | Mapping[str, Tensor]


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    if isinstance(batch, Mapping):
        return {key: value[start:stop] for key, value in batch.items()}
    return batch[start:stop]


def _length(batch: Batch) -> int:
    if isinstance(batch, Mapping):
        return len(next(iter(batch.values())))
    return len(batch)


class _RandomState:
    """The CPU and (when used) CUDA generator states, to replay a forward pass with the same randomness."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def grad_cache_step(
    encode: Callable[[Batch], Tensor],
    views: Sequence[Batch],
    loss_fn: Callable[[list[Tensor]], Tensor],
    sub_batch_size: int,
    device: torch.device | None = None,
) -> Tensor:
    """Run forward and backward for a large batch in sub-batches; parameter ``.grad`` fields accumulate.

    Args:
        encode: maps a sub-batch of inputs to its (n, D) embeddings, with a graph when grad is enabled.
        views: one input batch per view, each of N samples (a tensor, or a mapping of tensors for text).
        loss_fn: maps the list of (N, D) view embeddings to the scalar loss.
        sub_batch_size: samples per sub-batch.
        device: where the encoder runs (for its random state); defaults to CPU.

    Returns:
        () the loss, detached.
    """
    if sub_batch_size < 1:
        raise ValueError(f"sub_batch_size must be >= 1, got {sub_batch_size}")
    device = device or torch.device("cpu")
    states: list[list[_RandomState]] = []
    cached: list[Tensor] = []
    # 1. embeddings without graph
    for view in views:
        n = _length(view)
        view_states, parts = [], []
        for start in range(0, n, sub_batch_size):
            view_states.append(_RandomState(device))
            with torch.no_grad():
                parts.append(encode(_slice(view, start, start + sub_batch_size)))
        states.append(view_states)
        cached.append(torch.cat(parts).detach().requires_grad_(True))
    # 2. loss and the gradient with respect to the embeddings
    loss = loss_fn(cached)
    loss.backward()
    # 3. re-embed with graph and push the cached gradient through the encoder
    after = _RandomState(device)
    for view, view_states, reps in zip(views, states, cached, strict=True):
        for index, start in enumerate(range(0, _length(view), sub_batch_size)):
            view_states[index].restore()
            z = encode(_slice(view, start, start + sub_batch_size))
            z.backward(gradient=reps.grad[start : start + sub_batch_size])
    after.restore()
    return loss.detach()
