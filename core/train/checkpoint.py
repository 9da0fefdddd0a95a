"""Checkpoints: weights in safetensors (never pickle), trainer state beside them, written atomically.

A checkpoint is a directory::

    model.safetensors    model weights; metadata holds the run config and the input spec
    trainer.safetensors  optimiser tensors, loss parameters (learnable temperature), RNG state
    trainer.json         step, epoch, optimiser param groups and scalars, grad-scaler state, metrics (its own
                         step's evaluation and the best one so far, and the evaluations since that one)

It is written under a temporary name, every file fsynced, then renamed into place, so a crash mid-write leaves
the previous checkpoint untouched and no partial directory under the final name.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from core.config import RunConfig
from core.data.records import InputSpec

FORMAT = "embedtrain-checkpoint/1"
WEIGHTS_FILE = "model.safetensors"  # alone in a directory, enough for core.inference.Embedder


class CheckpointError(ValueError):
    """A checkpoint on disk is missing, truncated or not of this format, or one could not be written."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _os_errno(error: BaseException) -> int | None:
    """The OS's error number of a failed write: Python's OSError's, or the one in the text of safetensors' error
    ("I/O error: No space left on device (os error 28)")."""
    if isinstance(error, OSError):
        return error.errno
    found = re.search(r"\(os error (\d+)\)", str(error))
    return int(found.group(1)) if found else None


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    # the directory name only: storage paths are not for API callers
    return CheckpointError(f"checkpoint {Path(path).name} cannot be loaded ({type(error).__name__}: {error})")


@dataclass
class TrainerState:
    """Everything beyond the weights that a resumed run needs."""

    step: int
    epoch: int
    optimizer: dict[str, Any]
    loss: dict[str, torch.Tensor]
    scaler: dict[str, Any] | None
    rng: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)  # the evaluation at this step, if any
    best_metrics: dict[str, float] = field(default_factory=dict)  # the best evaluation up to this step
    stale_evaluations: int = 0  # evaluations since the best, for train.early_stop_patience


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        scalars[str(pid)] = {}
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[str(pid)][name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(values) for pid, values in meta["scalars"].items()}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: Path, model: nn.Module, config: RunConfig, spec: InputSpec, trainer: TrainerState) -> Path:
    """Write a checkpoint directory at ``path`` atomically and return ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        tmp.mkdir(parents=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        metadata = {"format": FORMAT, "config": config.model_dump_json(), "spec": json.dumps(asdict(spec))}
        save_file(weights, tmp / WEIGHTS_FILE, metadata=metadata)
        optim_tensors, optim_meta = _split_optimizer(trainer.optimizer)
        extra = {f"loss.{k}": v.detach().cpu().contiguous() for k, v in trainer.loss.items()}
        save_file({**optim_tensors, **extra, "rng.cpu": trainer.rng.cpu()}, tmp / "trainer.safetensors")
        meta = {
            "format": FORMAT,
            "step": trainer.step,
            "epoch": trainer.epoch,
            "optimizer": optim_meta,
            "scaler": trainer.scaler,
            "metrics": trainer.metrics,
            "best_metrics": trainer.best_metrics,
            "stale_evaluations": trainer.stale_evaluations,
        }
        (tmp / "trainer.json").write_text(json.dumps(meta))
        for child in tmp.iterdir():
            _fsync(child)
        _fsync(tmp)
        if path.exists():  # a re-run reached the same step again: same content, replace it whole
            shutil.rmtree(path)
        os.rename(tmp, path)
        _fsync(path.parent)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        # a full or unwritable volume is the operator's to fix: said so, rather than as an internal error
        code = _os_errno(error)
        if code in NO_SPACE:
            raise CheckpointError(
                f"no space left on the storage volume to write the checkpoint of step {trainer.step}: free space on "
                "the volume that holds the checkpoints (the service's EMBEDTRAIN_STORAGE_ROOT), or keep fewer "
                "checkpoints (train.keep_checkpoints); the job's earlier checkpoints are kept"
            ) from error
        if code in NOT_WRITABLE:
            raise CheckpointError(
                f"the checkpoint of step {trainer.step} cannot be written ({os.strerror(code)}): the volume that holds "
                "the checkpoints (the service's EMBEDTRAIN_STORAGE_ROOT) must be writable by the worker's user"
            ) from error
        raise
    return path


def read_config(path: Path) -> tuple[RunConfig, InputSpec]:
    """The run config and input spec stored with a checkpoint's weights."""
    from safetensors import safe_open

    try:
        with safe_open(Path(path) / WEIGHTS_FILE, framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"not of format {FORMAT}")
        return RunConfig.model_validate_json(metadata["config"]), InputSpec(**json.loads(metadata["spec"]))
    except Exception as error:  # safetensors, OS and validation errors all mean: unusable checkpoint
        raise _unreadable(path, error) from error


def load_weights(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The model's state dict (safetensors: no code runs while loading)."""
    try:
        return load_file(Path(path) / WEIGHTS_FILE, device=str(device))
    except Exception as error:  # same: a truncated or foreign file is an unusable checkpoint
        raise _unreadable(path, error) from error


def load_trainer_state(path: Path) -> TrainerState:
    """Optimiser, loss, scaler and RNG state of a checkpoint."""
    path = Path(path)
    meta = json.loads((path / "trainer.json").read_text())
    tensors = load_file(path / "trainer.safetensors")
    return TrainerState(
        step=int(meta["step"]),
        epoch=int(meta["epoch"]),
        optimizer=_join_optimizer(tensors, meta["optimizer"]),
        loss={k.removeprefix("loss."): v for k, v in tensors.items() if k.startswith("loss.")},
        scaler=meta["scaler"],
        rng=tensors["rng.cpu"],
        metrics=meta.get("metrics", {}),
        best_metrics=meta.get("best_metrics", {}),
        stale_evaluations=int(meta.get("stale_evaluations", 0)),
    )


def is_complete(path: Path) -> bool:
    """Whether ``path`` holds a whole checkpoint (temporary directories never do)."""
    path = Path(path)
    return all((path / name).is_file() for name in (WEIGHTS_FILE, "trainer.safetensors", "trainer.json"))
