"""Embedding with a trained model: rebuild it from a checkpoint (config + safetensors weights) and embed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from core.data.readers import aspect_box, nchw, to_uint8_nchw
from core.data.records import InputSpec
from core.encoders import EmbeddingModel, build_model
from core.encoders.image import squared
from core.tracing import trace_checked
from core.train.checkpoint import load_weights, read_config

# The image encoder resizes inputs by a test on their shape, which a trace would freeze: images stay eager.
TRACED_MODALITIES = ("text", "vectors")

Precision = Literal["fp32", "bf16"]


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 products in hardware: a GPU with bf16, an x86 CPU with AVX512-BF16 or AMX.
    Elsewhere bf16 is emulated and slower than fp32 (oneDNN's own check also admits plain AVX-512, where it
    emulates bf16, so the CPU's flags are asked directly)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def model_view(images: Tensor, spec: InputSpec, size: int) -> Tensor:
    """(B, C, H, W) images as an image model of ``spec`` and ``size`` inputs sees them when it embeds them: cropped
    around the centre to its training images' aspect (:func:`core.data.readers.aspect_box`, as the dataset cropped
    an image of another aspect), then brought to the square (:func:`core.encoders.image.squared`). Before, an image
    of another aspect was stretched to the square whole: a 3:4 portrait, for a model trained on 4:3 landscapes,
    came out 1.78 times wider for its height than the landscapes did."""
    if spec.height and spec.width:
        rows, cols = aspect_box(*images.shape[-2:], spec.height, spec.width)
        images = images[..., rows, cols]
    return squared(images, size)


def with_channels(images: Tensor, channels: int) -> Tensor:
    """(B, C, H, W) images with ``channels`` channels: grey repeated on three for a colour model, colour averaged
    for a grey one."""
    if images.shape[1] == channels:
        return images
    return images.mean(1, keepdim=True) if channels == 1 else images.expand(-1, 3, -1, -1)


class Embedder:
    """A model loaded from a checkpoint, in eval mode, that maps raw inputs to normalised embeddings.

    Args:
        checkpoint: a checkpoint directory.
        device: where to run.
        trace: run the pass as a TorchScript trace (:mod:`core.tracing`), which holds no GIL, where the trace
            answers probes of several shapes as the eager pass does; :attr:`untraced_because` says why not
            otherwise. Only models of :data:`TRACED_MODALITIES`.
        precision: ``bf16`` runs the pass under bf16 autocast: matrix products and convolutions in bf16, norms,
            softmax and the final normalisation in fp32; the embeddings come out fp32, within ~1e-3 of the fp32
            pass's (cosine similarity to them above 0.9999). Worth it where :func:`native_bf16` holds
            (1.3-1.9x faster for all-MiniLM-L6-v2 on a 2-core AMD EPYC with AVX512-BF16, bench/RESULTS.md
            "Serving in bf16"). A trace is recorded under autocast, so that its casts are part of it, and frozen,
            so that the weights' casts are done once (:func:`core.tracing.trace_checked`).
    """

    def __init__(self, checkpoint: Path, device: torch.device | str = "cpu", trace: bool = False,
                 precision: Precision = "fp32") -> None:  # fmt: skip
        if precision not in get_args(Precision):
            raise ValueError(f"precision must be one of {get_args(Precision)}, not {precision!r}")
        self.config, self.spec = read_config(checkpoint)
        self.device = torch.device(device)
        self.model: EmbeddingModel = build_model(self.config, self.spec)
        self.model.load_state_dict(load_weights(checkpoint))
        self.model.to(self.device).eval()
        self.modality = self.spec.modality
        self.precision = precision
        eager = self._at_precision(self.model.embed)
        self.forward: Callable[[Any], Tensor] = eager  # prepared inputs -> (B, D) embeddings
        self.untraced_because: str | None = None
        if trace and self.modality not in TRACED_MODALITIES:
            self.untraced_because = f"{self.modality} models are not traced"
        elif trace:
            with self._autocast():
                example, *probes = self._probes()
                frozen = precision == "bf16"  # the weights held cast, not cast in every pass
                traced, self.untraced_because = trace_checked(self.model, "embed", example, probes, freeze=frozen)
            self.forward = eager if self.untraced_because else traced

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _at_precision(self, forward: Callable[[Any], Tensor]) -> Callable[[Any], Tensor]:
        """``forward`` under this embedder's autocast (itself in fp32)."""
        if self.precision == "fp32":
            return forward

        def under_autocast(inputs: Any) -> Tensor:
            with self._autocast():
                return forward(inputs)

        return under_autocast

    def _probes(self) -> list[Any]:
        """Prepared inputs of different shapes (batch of 1, padding, a text cut at ``max_length``)."""
        if self.modality == "text":
            long = " ".join(["word"] * (self.config.model.max_length + 8))
            texts = [["a short text", "a longer one, so that the shorter is padded to its length"], ["one"],
                     ["two words", long, "and a third text of middling length"]]  # fmt: skip
            return [self.model.backbone.tokenize(batch, self.device) for batch in texts]
        generator = torch.Generator().manual_seed(0)
        return [torch.randn(n, self.spec.features, generator=generator).to(self.device) for n in (2, 1, 5)]

    @property
    def dim(self) -> int:
        """Width of the served embedding."""
        return self.model.embedding_dim

    @torch.inference_mode()
    def embed_with_usage(self, inputs: Any) -> tuple[Tensor, Tensor]:
        """(B, D) embeddings and (B,) usage counts: tokens per text (one tokenisation), 1 per other input."""
        if self.modality == "text":
            batch = self.model.backbone.tokenize(list(inputs), self.device)
            return self.forward(batch).cpu(), batch["attention_mask"].sum(1).cpu()
        return self._pass(inputs), torch.ones(len(inputs), dtype=torch.long)

    @torch.inference_mode()
    def embed(self, inputs: Any, batch_size: int = 256) -> Tensor:
        """(B, D) L2-normalised embeddings, ``batch_size`` inputs a pass: a corpus of any size embeds in the
        memory of one pass (all-MiniLM-L6-v2 on 10,000 texts of 128 tokens in one pass would hold ~8 GB of
        attention scores a layer).

        Args:
            inputs: B strings (a string alone is one text); (B, F) vectors; or images as an array or tensor of
                (B, H, W), (B, H, W, C) or (B, C, H, W), of uint8 (or uint16) pixels, read as an NPZ dataset's are,
                or floats in [0, 1], or a list of B images (arrays, tensors or PIL images) of any sizes; each is
                seen as the model sees it (:func:`model_view`: cropped to the training images' aspect, then
                squared). A grey image given to a colour model is repeated on its three channels, a colour one
                given to a grey model averaged. Floats outside [0, 1] are refused: read as pixels in [0, 1], they
                would embed as noise.
            batch_size: inputs a pass.
        """
        if self.modality == "text" and isinstance(inputs, str):  # one text, as /v1/embeddings reads a string, not
            inputs = [inputs]  # one text per character
        items = list(inputs) if self.modality == "text" else inputs
        if len(items) == 0:
            raise ValueError("nothing to embed: inputs is empty")
        return torch.cat([self._pass(items[start : start + batch_size]) for start in range(0, len(items), batch_size)])

    def _pass(self, inputs: Any) -> Tensor:
        """One forward pass over prepared or raw inputs."""
        if self.modality == "text":
            batch: Any = self.model.backbone.tokenize(list(inputs), self.device)
        elif self.modality == "image":
            batch = self._images(inputs)
        else:
            batch = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=self.device)
            if batch.ndim != 2 or batch.shape[1] != self.spec.features:
                raise ValueError(f"vectors must be (n, {self.spec.features}) for this model, one input a row; got "
                                 f"shape {tuple(batch.shape)}")  # fmt: skip
        return self.forward(batch).cpu()

    def _images(self, inputs: Any) -> Tensor:
        """(B, C, H, W) floats in [0, 1] with the model's channels, from images as :meth:`embed` takes them; a list
        of images of different sizes each brought to the model's square first, as ``/v1/embeddings`` brings each
        of its inputs (before: numpy's "inhomogeneous shape" error); all seen as the model sees them
        (:func:`model_view`)."""
        if isinstance(inputs, list | tuple):
            arrays = [item.detach().cpu().numpy() if isinstance(item, Tensor) else np.asarray(item) for item in inputs]
            if len({array.shape for array in arrays}) > 1:
                return torch.cat([self._images(array[None]) for array in arrays])
            inputs = np.stack(arrays) if arrays else np.asarray(inputs)
        array = inputs.detach().cpu().numpy() if isinstance(inputs, Tensor) else np.asarray(inputs)
        if np.issubdtype(array.dtype, np.integer):
            images = torch.from_numpy(to_uint8_nchw(array).astype(np.float32)).div_(255.0)  # a PIL image's: read-only
        else:
            images = torch.as_tensor(nchw(array), dtype=torch.float32)
            low, high = (float(v) for v in torch.aminmax(images)) if images.numel() else (0.0, 0.0)
            if low < -1e-3 or high > 1 + 1e-3:  # the slack of a resize's float arithmetic
                raise ValueError(f"image values range over [{low:g}, {high:g}]; give floats in [0, 1], or the "
                                 "pixels as uint8")  # fmt: skip
        images = with_channels(images, self.spec.channels).to(self.device)  # the resize where the model runs
        return model_view(images, self.spec, self.config.model.image_size)
