"""/v1/embeddings, compatible with OpenAI's embeddings API."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import PrincipalDep, SettingsDep, StorageDep
from api.embeddings import service
from api.embeddings.schemas import EmbeddingRequest, EmbeddingResponse

router = APIRouter(prefix="/v1", tags=["embeddings"])


@router.post("/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(
    request: Request, body: EmbeddingRequest, principal: PrincipalDep, settings: SettingsDep, storage: StorageDep
) -> EmbeddingResponse:
    """Embed inputs with a deployed model."""
    request.app.state.embed_limiter.check(principal.key_id, "embeddings")
    return await service.create_embeddings(
        body, principal, settings, storage, request.app.state.model_cache, request.app.state.model_lookup
    )
