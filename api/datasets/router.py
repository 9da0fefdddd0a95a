"""/v1/datasets: upload, list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile, status

from api.datasets import service
from api.datasets.schemas import DatasetFormat, DatasetModality, DatasetPage, DatasetRead
from api.deps import PrincipalDep, SessionDep, SettingsDep, StorageDep

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetRead)
def upload_dataset(
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="The dataset file.")],
    modality: Annotated[DatasetModality, Form()],
    name: Annotated[str | None, Form(max_length=256)] = None,
    format: Annotated[DatasetFormat | None, Form(description="Defaults to the file name's extension.")] = None,
    label_column: Annotated[
        str | None,
        Form(
            min_length=1,
            max_length=128,
            description="The column holding the labels (text and vectors). Named, it must be in the file; left out, "
            "a column named 'label' is read where there is one.",
        ),
    ] = None,
    text_column: Annotated[str | None, Form(min_length=1, max_length=128, description="A text dataset's column of "
                           "texts, where it is not named 'text' (a 'sentence' or 'body' column).")] = None,
    anchor_column: Annotated[str | None, Form(min_length=1, max_length=128, description="A text dataset of pairs: the "
                             "column of anchors, where it is not named 'anchor' (a 'query' or 'question' column); "
                             "named with positive_column.")] = None,
    positive_column: Annotated[str | None, Form(min_length=1, max_length=128, description="A text dataset of pairs: "
                               "the column of positives, where it is not named 'positive' (a 'passage' or 'answer' "
                               "column); named with anchor_column.")] = None,
) -> DatasetRead:  # fmt: skip
    """Upload, validate and count a dataset."""
    columns = service.named_columns(modality, label_column, text_column, anchor_column, positive_column)
    dataset = service.create_dataset(session, storage, settings, principal, file.file, file.filename, name, modality,
                                     format, columns)  # fmt: skip
    return DatasetRead.model_validate(dataset)


@router.get("", response_model=DatasetPage)
def list_datasets(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> DatasetPage:
    """List datasets."""
    rows, total = service.list_datasets(session, principal, limit, offset)
    return DatasetPage(items=[DatasetRead.model_validate(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{dataset_id}", response_model=DatasetRead)
def get_dataset(session: SessionDep, principal: PrincipalDep, dataset_id: str) -> DatasetRead:
    """Read one dataset."""
    return DatasetRead.model_validate(service.owned_dataset(session, principal, dataset_id))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(session: SessionDep, storage: StorageDep, principal: PrincipalDep, dataset_id: str) -> None:
    """Delete a dataset that no queued or running job uses."""
    service.delete_dataset(session, storage, principal, dataset_id)
