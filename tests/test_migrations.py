"""The schema comes only from Alembic: it builds on PostgreSQL and SQLite, and matches the ORM tables."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from core.store.tables import Base
from tests.conftest import migrate


def _diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_postgres_schema_matches_the_models(pg_url: str) -> None:
    assert _diff(pg_url) == []


@pytest.mark.parametrize("name", ["fresh.db"])
def test_sqlite_schema_builds_and_matches_the_models(tmp_path, name: str) -> None:
    url = f"sqlite:///{tmp_path / name}"
    migrate(url)
    engine = create_engine(url)
    assert {"api_key", "dataset", "job", "job_event", "metric", "checkpoint", "model_version"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()
    assert _diff(url) == []
