"""Embedding with a trained model: rebuild it from a checkpoint (config + safetensors weights) and embed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.encoders import EmbeddingModel, build_model
from core.train.checkpoint import load_weights, read_config


class Embedder:
    """A model loaded from a checkpoint, in eval mode, that maps raw inputs to normalised embeddings.

    Args:
        checkpoint: a checkpoint directory.
        device: where to run.
    """

    def __init__(self, checkpoint: Path, device: torch.device | str = "cpu") -> None:
        self.config, self.spec = read_config(checkpoint)
        self.device = torch.device(device)
        self.model: EmbeddingModel = build_model(self.config, self.spec)
        self.model.load_state_dict(load_weights(checkpoint))
        self.model.to(self.device).eval()
        self.modality = self.spec.modality

    @property
    def dim(self) -> int:
        """Width of the served embedding."""
        return self.model.embedding_dim

    @torch.inference_mode()
    def embed_with_usage(self, inputs: Any) -> tuple[Tensor, Tensor]:
        """(B, D) embeddings and (B,) usage counts: tokens per text (one tokenisation), 1 per other input."""
        if self.modality == "text":
            batch = self.model.backbone.tokenize(list(inputs), self.device)
            return self.model.embed(batch).cpu(), batch["attention_mask"].sum(1).cpu()
        return self.embed(inputs), torch.ones(len(inputs), dtype=torch.long)

    @torch.inference_mode()
    def embed(self, inputs: Any) -> Tensor:
        """(B, D) L2-normalised embeddings.

        Args:
            inputs: (B, F) vectors, (B, C, H, W) images with values in [0, 1], or B strings.
        """
        if self.modality == "text":
            batch: Any = self.model.backbone.tokenize(list(inputs), self.device)
        else:
            batch = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=self.device)
        return self.model.embed(batch).cpu()
