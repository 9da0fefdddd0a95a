"""Job request and response bodies. The config is ``core``'s ``RunConfig``, validated with its bounds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic.json_schema import SkipJsonSchema

from api.errors import body_invalid
from core.config import RunConfig

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


def _names_no_modality(config: Any) -> bool:
    """Whether a raw config leaves ``data.modality`` out (or null, or the whole ``data``): the dataset's is meant."""
    if not isinstance(config, dict):
        return False
    data = config.get("data")
    return data is None or (isinstance(data, dict) and data.get("modality") is None)


def _complete_later(
    config: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
) -> RunConfig | dict[str, Any]:  # fmt: skip
    """A config that names no modality, or whose model and head sections default to those of the model it starts
    from, is kept as given, to be validated once the dataset and the model are known (:meth:`JobCreate.run_config`);
    any other is validated as a ``RunConfig`` now."""
    if isinstance(config, dict) and (_names_no_modality(config) or info.data.get("start_from") is not None):
        return dict(config)
    return RunConfig.model_validate(config)


class StartFrom(BaseModel):
    """A registered model whose weights a job starts from."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128, description="The name of one of the caller's models.")
    version: int | None = Field(None, ge=1, description="Defaults to the newest version.")


def _merged(base: dict[str, Any], given: Any) -> Any:
    """A config section: the given one's fields over the base's, where both build the same kind of thing."""
    if not isinstance(given, dict) or given.get("kind", base.get("kind")) != base.get("kind"):
        return given  # another kind (or not a section at all): validated, then refused, as given
    return {**base, **given}


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=64)
    name: str = Field("job", min_length=1, max_length=256)
    start_from: StartFrom | None = Field(
        None,
        description="Start from the weights of a registered model (fine-tune it on this dataset) rather than from "
        "new ones. Its model and head sections are the config's defaults; the optimiser, schedule and steps start "
        "anew.",
    )
    config: Annotated[RunConfig | SkipJsonSchema[dict[str, Any]], WrapValidator(_complete_later)] = Field(
        default_factory=dict,
        description="The run config. Every field has a default: data.modality is the dataset's, and the model and "
        "augment sections are the modality's.",
    )

    def run_config(self, modality: str, base: dict[str, Any] | None = None) -> RunConfig:
        """The config with ``data.modality`` the dataset's where the body named none, and the ``model`` and ``head``
        sections of ``base`` (the config of the model it starts from) under the body's; a field it gets wrong
        answers 422 as if FastAPI had validated it."""
        if isinstance(self.config, RunConfig):
            return self.config
        data = self.config.get("data") or {}
        raw = {**self.config, "data": {**data, "modality": data.get("modality") or modality}}
        for section in ("model", "head") if base else ():
            raw[section] = _merged(base[section], raw.get(section, {}))
        try:
            return RunConfig.model_validate(raw)
        except ValidationError as error:
            problems = error.errors(include_url=False, include_context=True, include_input=False)
            raise body_invalid(problems, "config") from None


EPOCH = "Counted from 0: the first epoch is 0 (the dashboard shows it as 1 of `train.epochs`)."


class Progress(BaseModel):
    epoch: int = Field(description=f"The epoch of the latest step. {EPOCH}")
    step: int
    total_steps: int
    fraction: float
    samples_per_s: float | None
    eta_s: float | None


class JobRead(BaseModel):
    id: str
    name: str
    dataset_id: str | None
    status: JobStatus
    config: dict[str, Any]
    start_from: dict[str, Any] | None = Field(
        description="The registered model its weights started from: model, version and checkpoint_id; null: new "
        "weights."
    )
    queue: str
    progress: Progress
    metrics: dict[str, float]
    error: str | None
    attempts: int
    worker: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class JobPage(BaseModel):
    items: list[JobRead]
    total: int
    limit: int
    offset: int


class MetricPoint(BaseModel):
    step: int
    epoch: int = Field(description=EPOCH)
    value: float


class JobMetrics(BaseModel):
    job_id: str
    series: dict[str, list[MetricPoint]]


class CheckpointRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    step: int
    epoch: int = Field(description=EPOCH)
    metrics: dict[str, float]
    created_at: datetime
    best: bool = Field(False, description="The checkpoint that registering 'best' takes: the highest k-NN accuracy, "
                       "else the lowest val_loss, of those evaluated (ties to the later step); the last where none "
                       "was.")  # fmt: skip


class EventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    message: str
    created_at: datetime


class ProjectionPoint(BaseModel):
    x: float
    y: float
    label: str | None


class Projection(BaseModel):
    job_id: str
    checkpoint_id: str
    step: int
    points: list[ProjectionPoint]
