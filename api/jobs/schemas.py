"""Job request and response bodies. The config is ``core``'s ``RunConfig``, validated with its bounds."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.config import RunConfig

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=64)
    name: str = Field("job", min_length=1, max_length=256)
    config: RunConfig


class Progress(BaseModel):
    epoch: int
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
    epoch: int
    value: float


class JobMetrics(BaseModel):
    job_id: str
    series: dict[str, list[MetricPoint]]


class CheckpointRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    step: int
    epoch: int
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
