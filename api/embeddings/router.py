"""/v1/embeddings, compatible with OpenAI's embeddings API.

The hottest route, so a :class:`~api.plain_route.PlainRoute`: it authenticates, parses and answers by itself
rather than through FastAPI's dependency solving and response validation (see that module for why and what it
saves).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.deps import BEARER_SECURITY, authenticate
from api.embeddings import service
from api.embeddings.schemas import EmbeddingRequest, EmbeddingResponse
from api.plain_route import PlainRoute, parse_body, plain_openapi

router = APIRouter(prefix="/v1", tags=["embeddings"], route_class=PlainRoute)


@router.post("/embeddings", response_model=EmbeddingResponse,
             openapi_extra=plain_openapi(BEARER_SECURITY, body=EmbeddingRequest))  # fmt: skip
async def create_embeddings(request: Request) -> Response:
    """Embed inputs with a deployed model."""
    state = request.app.state
    principal = await authenticate(request)
    state.embed_limiter.check(principal.key_id, "embeddings")
    body = await parse_body(request, EmbeddingRequest)
    answer = await service.create_embeddings(
        body, principal, state.settings, state.storage, state.model_cache, state.model_lookup
    )
    return Response(answer, media_type="application/json")
