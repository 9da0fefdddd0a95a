"""Dataset request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

DatasetModality = Literal["text", "vectors", "image"]
DatasetFormat = Literal["jsonl", "json", "csv", "txt", "npy", "parquet", "zip", "npz"]


class DatasetRead(BaseModel):
    id: str
    name: str
    modality: DatasetModality
    format: DatasetFormat
    size_bytes: int
    sha256: str
    num_records: int
    num_labels: int | None
    details: dict[str, Any]
    created_at: datetime

    model_config = {"from_attributes": True}


class DatasetPage(BaseModel):
    items: list[DatasetRead]
    total: int
    limit: int
    offset: int
