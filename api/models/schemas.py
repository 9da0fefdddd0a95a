"""Model registry bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.inference import Precision


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=64)
    checkpoint: str = Field("last", min_length=1, max_length=64, description="'last', 'best', or a checkpoint id.")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelDeploy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, ge=1, description="Defaults to the newest version.")
    precision: Precision | None = Field(
        None,
        description="The forward passes' precision for this deployment: 'bf16' (bf16 autocast; 1.3-1.9x faster for "
        "text models on CPUs with bf16 units, slower for small vector models) or 'fp32'. Defaults to the server's "
        "EMBEDTRAIN_EMBED_PRECISION.",
    )


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    version: int
    job_id: str
    checkpoint_id: str
    modality: str
    dimensions: int
    deployed: bool
    created_at: datetime
    deployed_at: datetime | None
    precision: Precision | None = Field(description="Set at deployment; null: the server's default precision.")


class ModelEntry(BaseModel):
    """One model name with its versions, as OpenAI's model object (``id``, ``object``, ``created``, ``owned_by``), so
    that OpenAI clients and the tools built on them can list what to pass to /v1/embeddings."""

    id: str = Field(description="The model's name: what /v1/embeddings takes as `model`.")
    object: Literal["model"] = "model"
    created: int = Field(description="When its first version was registered, in Unix seconds.")
    owned_by: str
    deployed_version: int | None = Field(description="The version /v1/embeddings serves; null: none is deployed.")
    versions: list[ModelRead] = Field(description="Every registered version, oldest first.")


class ModelList(BaseModel):
    """OpenAI's list object."""

    object: Literal["list"] = "list"
    data: list[ModelEntry]


class ModelDeleted(BaseModel):
    """OpenAI's answer to a model's deletion, with the version numbers deleted."""

    id: str
    object: Literal["model"] = "model"
    deleted: bool = True
    versions: list[int]


class NeighborQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, max_length=32_768, description="A text (text models).")
    k: int = Field(5, ge=1, le=50)


class Neighbor(BaseModel):
    index: int
    score: float
    text: str | None
    label: str | None
