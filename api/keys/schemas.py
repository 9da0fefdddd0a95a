"""API key bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    name: str = Field("default", min_length=1, max_length=128)
    admin: bool = False


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    owner: str
    name: str
    prefix: str
    is_admin: bool
    from_environment: bool = Field(description="Stored from EMBEDTRAIN_ADMIN_KEY by `embedtrain-admin bootstrap`: a "
                                   "new value there revokes it.")  # fmt: skip
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyRead):
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")
