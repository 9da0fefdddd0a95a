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


class UnusableKey(Exception):
    """The key EMBEDTRAIN_ADMIN_KEY holds cannot be made a working admin key; the message says why."""


def import_environment_key(session: Session, key: str, owner: str) -> list[ApiKey]:
    """Make ``key``, EMBEDTRAIN_ADMIN_KEY's value, an admin key (stored once; ``embedtrain-admin bootstrap`` runs at
    each ``docker compose up``) and revoke the keys the variable held before, so that a new value there rotates the
    admin key rather than adding a second one beside the old. The keys revoked now.

    Raises :class:`UnusableKey` for a key that was revoked (it stays so), one stored without admin rights, or one
    whose prefix another key holds."""
    prefix = _prefix_of(key)
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None:
        row = ApiKey(owner=owner, name="bootstrap", prefix=prefix, key_hash=_hash(key), is_admin=True)
        session.add(row)
    elif not hmac.compare_digest(row.key_hash, _hash(key)):
        raise UnusableKey(f"another stored key has its prefix {prefix}")
    elif row.revoked_at is not None:
        raise UnusableKey(f"it was revoked (prefix {prefix}, at {row.revoked_at:%Y-%m-%d %H:%M}) and stays so")
    elif not row.is_admin:
        raise UnusableKey(f"it is stored as a key of {row.owner!r} without admin rights (prefix {prefix})")
    row.from_environment = True
    session.flush()
    earlier = session.scalars(select(ApiKey).where(ApiKey.from_environment.is_(True), ApiKey.revoked_at.is_(None),
                                                   ApiKey.id != row.id).order_by(ApiKey.created_at))  # fmt: skip
    revoked = list(earlier)
    for old in revoked:
        old.revoked_at = utcnow()
    return revoked


def _prefix_of(key: str) -> str:
    """The prefix that finds a key's row: its own, or for a key not in ``et_<prefix>_<secret>`` form, a hash's."""
    return _prefix(key) or hashlib.sha256(key.encode()).hexdigest()[:12]


def _prefix(key: str) -> str | None:
    parts = key.split("_")
    return parts[1] if len(parts) >= 3 and parts[0] == "et" and len(parts[1]) == 12 else None


def authenticate(session: Session, key: str) -> Principal | None:
    """The principal of a valid, unrevoked key; None otherwise."""
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == _prefix_of(key)))
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
