"""API keys: random, shown once, stored as a SHA-256 hash, compared in constant time, revocable.

A key reads ``et_<prefix>_<secret>``: the prefix finds the row, the hash of the whole key must match.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.store.tables import ApiKey, utcnow


@dataclass(frozen=True)
class Principal:
    """Who is calling: the owner of their objects, and whether they may see everyone's."""

    owner: str
    is_admin: bool
    key_id: str


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, owner: str, name: str = "default", is_admin: bool = False) -> tuple[ApiKey, str]:
    """A new key row and the key itself, which is never stored and cannot be shown again."""
    prefix = secrets.token_hex(6)
    key = f"et_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(owner=owner, name=name, prefix=prefix, key_hash=_hash(key), is_admin=is_admin)
    session.add(row)
    return row, key


def import_key(session: Session, key: str, owner: str, is_admin: bool) -> ApiKey:
    """Store a key given from the environment (bootstrap admin key), if not stored yet."""
    prefix = _prefix(key) or hashlib.sha256(key.encode()).hexdigest()[:12]
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None:
        row = ApiKey(owner=owner, name="bootstrap", prefix=prefix, key_hash=_hash(key), is_admin=is_admin)
        session.add(row)
    return row


def _prefix(key: str) -> str | None:
    parts = key.split("_")
    return parts[1] if len(parts) >= 3 and parts[0] == "et" and len(parts[1]) == 12 else None


def authenticate(session: Session, key: str) -> Principal | None:
    """The principal of a valid, unrevoked key; None otherwise."""
    prefix = _prefix(key) or hashlib.sha256(key.encode()).hexdigest()[:12]
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, _hash(key)):
        return None
    return Principal(owner=row.owner, is_admin=row.is_admin, key_id=row.id)


def revoke_key(session: Session, key_id_or_prefix: str) -> bool:
    """Revoke a key by id or prefix; False if no such key."""
    row = session.scalar(select(ApiKey).where((ApiKey.id == key_id_or_prefix) | (ApiKey.prefix == key_id_or_prefix)))
    if row is None:
        return False
    row.revoked_at = row.revoked_at or utcnow()
    return True


def has_keys(session: Session) -> bool:
    """Whether any key exists (the embedded default creates an admin key when none does)."""
    return session.scalar(select(ApiKey.id).limit(1)) is not None
