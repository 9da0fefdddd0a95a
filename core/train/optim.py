"""Optimisers (AdamW, SGD, LARS) and the learning-rate schedule (linear warm-up, then cosine decay)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from core.config import OptimConfig


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017, "Large Batch Training of Convolutional Networks", Algorithm 1), as SimCLR uses it.

    Weight decay is added to the gradient and the update is scaled by the trust ratio
    ``eta * ||w|| / ||g + wd * w||``; biases and normalisation parameters (1-D) are excluded from both, as in
    SimCLR's implementation. Momentum is applied to the scaled update.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 1e-3,
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = torch.where(
                        (w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm, torch.ones_like(w_norm)
                    )
                    update = update * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(update).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])


def build_optimizer(config: OptimConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser named by the config."""
    if config.name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return LARS(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def lr_at(step: int, total_steps: int, config: OptimConfig) -> float:
    """Learning rate of ``step``: linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio * lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.min_lr_ratio * config.lr
    return floor + 0.5 * (config.lr - floor) * (1.0 + math.cos(math.pi * progress))
