"""Encoders (backbones), the SimCLR projection head, and the model that serves embeddings."""

from core.encoders.model import EmbeddingModel, build_model

__all__ = ["EmbeddingModel", "build_model"]
