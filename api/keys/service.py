"""Key rules: admins create keys for any owner; a key can be revoked by an admin or by its own owner."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import Forbidden, NotFound
from api.keys.schemas import KeyCreate
from core.store.keys import Principal, create_key, revoke_key
from core.store.tables import ApiKey


def create(session: Session, principal: Principal, body: KeyCreate) -> tuple[ApiKey, str]:
    """A new key (admins only: another key is refused with 403, the rule being public)."""
    if not principal.is_admin:
        raise Forbidden("creating keys needs an admin key; ask an admin for a key, or run "
                        "'embedtrain-admin keys create' on the server")  # fmt: skip
    row, key = create_key(session, body.owner, body.name, is_admin=body.admin)
    session.commit()
    return row, key


def list_keys(session: Session, principal: Principal) -> list[ApiKey]:
    """The caller's owner's keys (an admin: everyone's), newest first; revoked ones too, with when."""
    query = select(ApiKey)
    if not principal.is_admin:
        query = query.where(ApiKey.owner == principal.owner)
    return list(session.scalars(query.order_by(ApiKey.created_at.desc(), ApiKey.id)))


def revoke(session: Session, principal: Principal, key_id: str) -> ApiKey:
    """Revoke a key by id or prefix."""
    row = session.query(ApiKey).filter((ApiKey.id == key_id) | (ApiKey.prefix == key_id)).one_or_none()
    if row is None or (row.owner != principal.owner and not principal.is_admin):
        raise NotFound(f"key {key_id} not found", field="key_id")
    revoke_key(session, row.id)
    session.commit()
    return row
