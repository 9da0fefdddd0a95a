"""/v1/models: register, deploy, undeploy, list, get, delete, download the weights."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import FileResponse

from api.deps import PrincipalDep, SessionDep, SettingsDep, StorageDep
from api.models import service
from api.models.schemas import (
    ModelCreate,
    ModelDeleted,
    ModelDeploy,
    ModelEntry,
    ModelList,
    ModelRead,
    Neighbor,
    NeighborQuery,
)

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelRead)
def register_model(session: SessionDep, storage: StorageDep, principal: PrincipalDep, body: ModelCreate) -> ModelRead:
    """Register a job's checkpoint as a new model version."""
    return ModelRead.model_validate(service.register_model(session, storage, principal, body))


@router.get("", response_model=ModelList)
def list_models(session: SessionDep, principal: PrincipalDep) -> ModelList:
    """List models in OpenAI's shape (``data``: one entry per name, ``id`` the name), each with its versions."""
    return ModelList(data=service.list_models(session, principal))


@router.get("/{name}", response_model=ModelEntry)
def get_model(session: SessionDep, principal: PrincipalDep, name: str) -> ModelEntry:
    """One model and its versions (OpenAI's retrieve-model)."""
    return service.get_model(session, principal, name)


@router.get("/{name}/weights", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "model.safetensors"}})  # fmt: skip
def model_weights(
    session: SessionDep, storage: StorageDep, principal: PrincipalDep, name: str,
    version: Annotated[int | None, Query(ge=1, description="Defaults to the newest version.")] = None,
) -> FileResponse:  # fmt: skip
    """Download a version's weights: safetensors with the run config in its metadata. Saved as
    ``DIR/model.safetensors``, ``core.inference.Embedder(DIR)`` embeds with it offline."""
    path, target = service.weights(session, storage, principal, name, version)
    return FileResponse(path, media_type="application/octet-stream",
                        filename=f"{target.name}-v{target.version}.safetensors")  # fmt: skip


@router.post("/{name}/deploy", response_model=ModelRead)
def deploy_model(session: SessionDep, principal: PrincipalDep, name: str, body: ModelDeploy | None = None) -> ModelRead:
    """Serve a version of a model (the newest by default), at the body's precision or the server's default."""
    return ModelRead.model_validate(service.deploy(session, principal, name, body or ModelDeploy()))


@router.post("/{name}/neighbors", response_model=list[Neighbor])
def model_neighbors(
    request: Request, session: SessionDep, storage: StorageDep, settings: SettingsDep, principal: PrincipalDep,
    name: str, body: NeighborQuery,
) -> list[Neighbor]:  # fmt: skip
    """Embed a text and return its nearest records of the model's training dataset."""
    return service.neighbors(session, storage, settings, principal, name, body.input, body.k,
                             request.app.state.neighbor_banks)  # fmt: skip


@router.post("/{name}/undeploy", response_model=list[ModelRead])
def undeploy_model(session: SessionDep, principal: PrincipalDep, name: str) -> list[ModelRead]:
    """Stop serving a model."""
    return [ModelRead.model_validate(m) for m in service.undeploy(session, principal, name)]


@router.delete("/{name}", response_model=ModelDeleted)
def delete_model(
    session: SessionDep, principal: PrincipalDep, name: str,
    version: Annotated[int | None, Query(ge=1, description="Delete only this version; by default, every version.")] = None,
) -> ModelDeleted:  # fmt: skip
    """Delete a model's versions (not deployed ones: undeploy first), answering as OpenAI's model deletion does. Its
    job and checkpoints stay."""
    return ModelDeleted(id=name, versions=service.delete(session, principal, name, version))
