"""OpenAI-compatible embeddings bodies (https://platform.openai.com/docs/api-reference/embeddings)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

from core.data.readers import IMAGE_FORMATS

# list[int]: one array of token ids, which OpenAI accepts; parsed so that a text model can say it does not.
# StrictFloat: a vector's values are JSON numbers; true or "0.5" is refused rather than read as 1.0 or 0.5
EmbeddingInput = str | list[str] | list[int] | list[list[StrictFloat]]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients may send fields we ignore (user, ...)

    model: str = Field(min_length=1, max_length=128)
    input: EmbeddingInput = Field(
        description="Text models: a string or a list of strings. Vector models: a list of numeric lists. "
        f"Image models: a list of base64 images ({IMAGE_FORMATS}; data: URLs too)."
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=65536, description="Truncate to this many and re-normalise.")


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage
