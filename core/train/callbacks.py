"""How the loop reports: a callback protocol and the plain records it passes. The loop knows no database."""

from __future__ import annotations

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
