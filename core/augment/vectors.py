"""Views of feature vectors: Gaussian noise, feature masking and SCARF corruption.

SCARF: Bahri et al. 2022, "SCARF: Self-Supervised Contrastive Learning using Random Feature Corruption",
section 2: a random subset of each row's features is replaced by draws from those features' empirical
marginal distributions (the value of the same feature in a random training row).
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.config import VectorAugmentConfig


class VectorViews:
    """Random views of (B, F) float vectors, drawn from the global (seeded) torch generator.

    Args:
        config: the augmentation slice of the run config.
        bank: (N, F) training vectors on the training device: the empirical marginals for SCARF.
    """

    def __init__(self, config: VectorAugmentConfig, bank: Tensor) -> None:
        self.config = config
        self.bank = bank
        self.mean = bank.mean(0)  # (F,)
        self.std = bank.std(0).clamp(min=1e-6)  # (F,) noise is in units of each feature's spread

    def __call__(self, x: Tensor) -> Tensor:
        """(B, F) -> (B, F) one random view."""
        c = self.config
        if c.scarf_prob > 0:
            rows = torch.randint(0, len(self.bank), x.shape, device=x.device)  # (B, F) random donor row
            donor = self.bank.gather(0, rows)  # (B, F) bank[rows[b, f], f]
            x = torch.where(torch.rand(x.shape, device=x.device) < c.scarf_prob, donor, x)
        if c.mask_prob > 0:
            x = torch.where(torch.rand(x.shape, device=x.device) < c.mask_prob, self.mean.expand_as(x), x)
        if c.noise_std > 0:
            x = x + c.noise_std * self.std * torch.randn(x.shape, device=x.device)
        return x
