"""Dataset rules: streamed, capped, hashed, unzipped (gzip), validated uploads; owner-scoped reads; guarded deletes."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePath
from typing import BinaryIO, Literal

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from api.errors import Conflict, Invalid, NotFound, TooLarge
from core.data.readers import (
    FORMATS,
    ColumnError,
    Columns,
    DatasetError,
    LabelColumnError,
    UnpacksTooLarge,
    format_of_name,
    gunzip,
    is_gzip,
    read_records,
)
from core.store.keys import Principal
from core.store.settings import Settings
from core.store.storage import Storage
from core.store.tables import Dataset, Job

CHUNK = 1 << 20


def _format_of(filename: str | None, declared: str | None, modality: str) -> str:
    named = format_of_name(filename or "")  # the name is a hint, never a path
    fmt = declared or named
    if fmt not in FORMATS[modality]:
        seen = (f"format {declared!r} does not fit modality {modality!r}" if declared else
                f"cannot tell the format from the file name (.{named})" if named else
                "cannot tell the format: the file name has no extension")  # fmt: skip
        raise Invalid(f"{seen}; pass format= one of {list(FORMATS[modality])} for modality {modality!r}",
                      field="format")  # fmt: skip
    return fmt


def _stage(stream: BinaryIO, storage: Storage, limit: int):
    staged = storage.staging()
    digest, size = hashlib.sha256(), 0
    try:
        with open(staged, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the upload is larger than the limit of {limit} bytes", field="file")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged, size, digest.hexdigest()


def _gunzipped(staged: Path, storage: Storage, limit: int) -> Path:
    """The staged upload decompressed, where it is gzip (``pandas.to_csv("x.csv.gz")``, ``gzip texts.jsonl``), into
    a new staged file no larger than ``limit``; the upload itself where it is not."""
    if not is_gzip(staged):
        return staged
    try:
        return gunzip(staged, storage.staging(), limit)
    except UnpacksTooLarge as error:
        raise TooLarge(str(error), field="file") from None
    except DatasetError as error:
        raise Invalid(str(error), field="file") from None


def _field_of(error: DatasetError, columns: Columns) -> str:
    """The form field a reader's error is about: a named column's, else the file."""
    if isinstance(error, LabelColumnError):
        return "label_column"
    if isinstance(error, ColumnError):
        fields = {"text": "text_column", "pairs": "anchor_column", "label": "label_column"}
        return next((field for role, field in fields.items() if role in columns.named), "file")
    return "file"


def named_columns(modality: str, label: str | None, text: str | None, anchor: str | None,
                  positive: str | None) -> Columns:  # fmt: skip
    """The columns an upload names (each None where it names none), checked against the modality and each other."""
    if label is not None and modality == "image":
        raise Invalid("label_column is for text and vectors files; an image dataset's labels are its ZIP's class "
                      "folders or its NPZ's 'labels' array", field="label_column")  # fmt: skip
    given = {"text_column": text, "anchor_column": anchor, "positive_column": positive}
    for field, value in given.items():
        if value is not None and modality != "text":
            raise Invalid(f"{field} is for text datasets; this upload's modality is {modality!r}", field=field)
    if text is not None and (anchor is not None or positive is not None):
        raise Invalid("name text_column for a dataset of texts, or anchor_column and positive_column for one of "
                      "pairs, not both", field="text_column")  # fmt: skip
    if (anchor is None) != (positive is None):
        missing = "positive_column" if positive is None else "anchor_column"
        raise Invalid(f"a dataset of pairs names both anchor_column and positive_column; {missing} is missing",
                      field=missing)  # fmt: skip
    if anchor is not None and anchor == positive:
        raise Invalid("anchor_column and positive_column name the same column", field="positive_column")
    return Columns.named_as(label, text, anchor, positive)


def create_dataset(
    session: Session, storage: Storage, settings: Settings, principal: Principal, stream: BinaryIO,
    filename: str | None, name: str | None, modality: str, fmt: str | None, columns: Columns = Columns(),
) -> Dataset:  # fmt: skip
    """Store and validate an upload; the row appears only once the file is complete and valid.

    ``columns``: by default, the labels are read from a column named "label" where the file has one, and a text
    dataset's texts or pairs from "text", or "anchor" and "positive"; a column the upload named must be in the file
    (:func:`named_columns`)."""
    fmt = _format_of(filename, fmt, modality)
    staged, size, sha256 = _stage(stream, storage, settings.max_upload_bytes)
    plain = staged
    try:
        if size == 0:
            raise Invalid("the uploaded file is empty", field="file")
        plain = _gunzipped(staged, storage, settings.max_upload_bytes)  # stored and read decompressed
        try:
            records = read_records(plain, modality, fmt, settings.read_limits, columns)
        except DatasetError as error:
            raise Invalid(str(error), field=_field_of(error, columns)) from None
        details = {"shape": list(_shape(records)), "paired": records.positives is not None,
                   "label_names": (records.label_names or [])[:1000],
                   "label_column": None if modality == "image" else columns.label}  # fmt: skip
        details.update(columns.text_fields())
        key = storage.new_dataset_key(fmt)
        storage.commit(plain, key)
    finally:
        staged.unlink(missing_ok=True)
        plain.unlink(missing_ok=True)
    dataset = Dataset(
        owner=principal.owner, name=(name or PurePath(filename or "dataset").stem)[:256], modality=modality,
        format=fmt, storage_key=key, size_bytes=size, sha256=sha256, num_records=len(records),
        num_labels=len(records.label_names) if records.label_names else None, details=details,
    )  # fmt: skip
    session.add(dataset)
    try:
        session.commit()
    except BaseException:
        storage.delete(key)
        raise
    return dataset


def _shape(records) -> tuple[int, ...]:  # noqa: ANN001 - Records
    if records.vectors is not None:
        return records.vectors.shape
    if records.images is not None:
        return records.images.shape
    return (len(records),)


def record_width(dataset: Dataset) -> int | None:
    """A vectors dataset's features, an image dataset's channels; None for texts."""
    return dataset.details.get("shape", [0, 0])[1] if dataset.modality in ("vectors", "image") else None


def owned_dataset(
    session: Session, principal: Principal, dataset_id: str, lock: Literal["share", "update"] | None = None,
    field: str = "dataset_id",
) -> Dataset:  # fmt: skip
    """The dataset if the caller may see it; another owner's answers 404 like a missing one.

    ``lock`` holds the row until the transaction ends (PostgreSQL; SQLite's writers take turns anyway): a job's
    submission reads it ``share``, a delete ``update``, so that a delete never misses a job submitted beside it nor a
    submission refers to a dataset deleted beside it."""
    dataset = session.get(Dataset, dataset_id, with_for_update={"read": lock == "share"} if lock else None)
    if dataset is None or (dataset.owner != principal.owner and not principal.is_admin):
        raise NotFound(f"dataset {dataset_id} not found", field=field)
    return dataset


def list_datasets(session: Session, principal: Principal, limit: int, offset: int) -> tuple[list[Dataset], int]:
    """The caller's datasets (everyone's for an admin), newest first."""
    query = select(Dataset)
    if not principal.is_admin:
        query = query.where(Dataset.owner == principal.owner)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(Dataset.created_at.desc(), Dataset.id).limit(limit).offset(offset)).all()
    return list(rows), int(total or 0)


def delete_dataset(session: Session, storage: Storage, principal: Principal, dataset_id: str) -> None:
    """Delete a dataset no queued or running job uses, to train on or to evaluate on (``data.val_dataset_id``)."""
    dataset = owned_dataset(session, principal, dataset_id, lock="update")
    used = or_(Job.dataset_id == dataset.id, Job.config["data"]["val_dataset_id"].as_string() == dataset.id)
    active = session.scalar(select(func.count()).where(used, Job.status.in_(("queued", "running"))))
    if active:
        raise Conflict(f"dataset {dataset_id} is used by {active} queued or running job(s); cancel them first")
    key = dataset.storage_key
    session.delete(dataset)
    session.commit()
    storage.delete(key)
