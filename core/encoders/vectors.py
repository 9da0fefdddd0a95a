"""MLP encoder for tabular / feature-vector data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.config import MLPConfig


class MLPEncoder(nn.Module):
    """Standardise features, then Linear-BN-ReLU blocks and a final linear layer.

    The per-feature mean and std are buffers (set from the training data by :meth:`fit_normalisation`) so
    that serving standardises exactly as training did.

    Args:
        config: the encoder slice of the run config.
        features: number of input features F.
    """

    def __init__(self, config: MLPConfig, features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))
        layers: list[nn.Module] = []
        width = features
        for _ in range(config.num_layers - 1):
            layers += [nn.Linear(width, config.hidden_dim), nn.BatchNorm1d(config.hidden_dim), nn.ReLU(inplace=True)]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = config.hidden_dim
        layers.append(nn.Linear(width, config.output_dim))
        self.net = nn.Sequential(*layers)
        self.output_dim = config.output_dim

    def fit_normalisation(self, mean: Tensor, std: Tensor) -> None:
        """Set the standardisation from the training vectors' (F,) mean and std."""
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-6))

    def forward(self, x: Tensor) -> Tensor:
        """(B, F) float vectors -> (B, output_dim)."""
        return self.net((x - self.mean) / self.std)
