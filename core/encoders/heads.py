"""SimCLR projection head (Chen et al. 2020, section 2.1: g(h) = W2 ReLU(BN(W1 h)))."""

from __future__ import annotations

from torch import Tensor, nn

from core.config import HeadConfig


class ProjectionHead(nn.Module):
    """Two-layer MLP mapping backbone features h to the space where the contrastive loss is applied.

    Args:
        config: the head slice of the run config.
        in_dim: width of the backbone output.
    """

    def __init__(self, config: HeadConfig, in_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, config.hidden_dim),
            nn.BatchNorm1d(config.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden_dim, config.projection_dim),
        )

    def forward(self, h: Tensor) -> Tensor:
        """(B, in_dim) -> (B, projection_dim)."""
        return self.net(h)
