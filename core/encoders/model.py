"""The trainable model: backbone + projection head, and the embedding it serves."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.config import HeadConfig, MLPConfig, ResNetConfig, RunConfig, TransformerConfig
from core.data.records import InputSpec
from core.encoders.heads import ProjectionHead
from core.encoders.image import ResNetEncoder
from core.encoders.text import TextEncoder
from core.encoders.vectors import MLPEncoder


class EmbeddingModel(nn.Module):
    """Backbone f and projection head g: ``h = f(x)``, ``z = g(h)``.

    Args:
        backbone: the encoder.
        head: the projection head.
        serve: which embedding :meth:`embed` returns, ``"backbone"`` (h) or ``"projection"`` (z).
    """

    def __init__(self, backbone: nn.Module, head: ProjectionHead, serve: str = "backbone") -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.serve = serve

    def forward(self, x: Any) -> tuple[Tensor, Tensor]:
        """Inputs -> (h, z): (B, backbone dim) features and (B, projection dim) projections."""
        h = self.backbone(x)
        return h, self.head(h)

    def project(self, x: Any) -> Tensor:
        """Inputs -> (B, projection dim) z, the tensor the loss sees."""
        return self.head(self.backbone(x))

    @torch.no_grad()
    def embed(self, x: Any) -> Tensor:
        """Inputs -> (B, D) L2-normalised served embeddings (call in eval mode)."""
        h = self.backbone(x)
        out = h if self.serve == "backbone" else self.head(h)
        return F.normalize(out.float(), dim=-1)

    @property
    def embedding_dim(self) -> int:
        """Width of the served embedding."""
        if self.serve == "backbone":
            return int(self.backbone.output_dim)
        return int(self.head.net[-1].out_features)


def build_encoder(config: MLPConfig | ResNetConfig | TransformerConfig, spec: InputSpec) -> nn.Module:
    """The backbone for an encoder config and input shape."""
    if isinstance(config, MLPConfig):
        return MLPEncoder(config, spec.features)
    if isinstance(config, ResNetConfig):
        return ResNetEncoder(config, spec.channels)
    return TextEncoder(config)


def build_head(config: HeadConfig, in_dim: int) -> ProjectionHead:
    """The SimCLR projection head."""
    return ProjectionHead(config, in_dim)


def build_model(config: RunConfig, spec: InputSpec) -> EmbeddingModel:
    """Backbone and head for a run; weights are random until trained or loaded."""
    backbone = build_encoder(config.model, spec)
    return EmbeddingModel(backbone, build_head(config.head, backbone.output_dim), serve=config.head.serve)
