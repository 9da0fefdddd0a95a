"""How the loop reports: a callback protocol and the plain records it passes. The loop knows no database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class StepReport:
    """One optimisation step."""

    step: int  # 1-based count of steps done
    total_steps: int
    epoch: int  # 0-based epoch of this step
    loss: float
    lr: float
    temperature: float
    samples_per_s: float


@dataclass(frozen=True)
class EvalReport:
    """Held-out evaluation at the end of an epoch."""

    step: int
    epoch: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint written to disk, with the metrics of the evaluation at its step (none between evaluations)."""

    path: Path
    step: int
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)


def checkpoint_score(metrics: Mapping[str, float]) -> tuple[int, float] | None:
    """How good the evaluation a checkpoint carries is, to compare with another's (higher is better): its k-NN
    accuracy where the data has labels, else minus its held-out loss; None for a checkpoint without one."""
    if "knn_top1" in metrics:
        return 1, metrics["knn_top1"]
    if "val_loss" in metrics:
        return 0, -metrics["val_loss"]
    return None


class TrainCallback(Protocol):
    """Receives progress; implementations decide what to keep and how often to write it."""

    def on_step(self, report: StepReport) -> None: ...

    def on_eval(self, report: EvalReport) -> None: ...

    def on_checkpoint(self, info: CheckpointInfo) -> None: ...


class NullCallback:
    """Ignores everything."""

    def on_step(self, report: StepReport) -> None:
        return None

    def on_eval(self, report: EvalReport) -> None:
        return None

    def on_checkpoint(self, info: CheckpointInfo) -> None:
        return None
