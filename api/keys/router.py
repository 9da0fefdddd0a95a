"""/v1/keys: create (admin), list and revoke API keys."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import PrincipalDep, SessionDep
from api.keys import service
from api.keys.schemas import KeyCreate, KeyCreated, KeyRead

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
def create_key(session: SessionDep, principal: PrincipalDep, body: KeyCreate) -> KeyCreated:
    """Create a key for an owner (admin keys only); the key is shown once."""
    row, key = service.create(session, principal, body)
    return KeyCreated(**KeyRead.model_validate(row).model_dump(), key=key)


@router.get("", response_model=list[KeyRead])
def list_keys(session: SessionDep, principal: PrincipalDep) -> list[KeyRead]:
    """List your keys (an admin key: every owner's), newest first: ids and prefixes to revoke by, never the keys."""
    return [KeyRead.model_validate(row) for row in service.list_keys(session, principal)]


@router.delete("/{key_id}", response_model=KeyRead)
def revoke_key(session: SessionDep, principal: PrincipalDep, key_id: str) -> KeyRead:
    """Revoke a key by id or prefix."""
    return KeyRead.model_validate(service.revoke(session, principal, key_id))
