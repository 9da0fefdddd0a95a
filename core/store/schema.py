"""Whether the database holds the schema this code needs: its Alembic revision against the migrations' head.

The schema comes only from the migrations (``embedtrain-admin migrate``). A database they were never run on, or one
an upgrade of the code has moved ahead of, would otherwise fail each request with "relation ... does not exist";
``/readyz`` and the operator commands say instead which revision the database is at and what to run.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
MIGRATE = "run `embedtrain-admin migrate` (Alembic's upgrade to head) against it"
_MISSING_OBJECT = ("42P01", "42703")  # PostgreSQL's undefined_table and undefined_column
_SQLITE_MISSING = ("no such table", "no such column")


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision of the migrations shipped with this code."""
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def schema_problem(connection: Connection) -> str | None:
    """None when the database is at this code's head revision; else what is wrong and what to run."""
    current = MigrationContext.configure(connection).get_current_revision()
    head = head_revision()
    if current == head:
        return None
    if current is None:
        return f"the database has no embedtrain schema (no Alembic revision; this version needs {head}): {MIGRATE}"
    return (f"the database's schema is at revision {current} and this version needs {head}: {MIGRATE} (a revision "
            "newer than this version's comes from a later release: run that release)")  # fmt: skip


def is_missing_schema_object(error: DBAPIError) -> bool:
    """Whether a statement failed for want of a table or column: a schema behind the code, not a bad request."""
    if getattr(error.orig, "sqlstate", None) in _MISSING_OBJECT:
        return True
    return any(text in str(error.orig) for text in _SQLITE_MISSING)
