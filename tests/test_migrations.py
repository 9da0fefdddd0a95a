"""The schema comes only from Alembic: it builds on PostgreSQL and SQLite, and matches the ORM tables."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

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


def test_deployments_made_before_the_precision_column_keep_the_servers_default(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'upgrade.db'}"
    migrate(url, revision="0001")
    engine = create_engine(url)
    with engine.begin() as connection:  # a deployed version as 0001 stored it (foreign keys are not enforced)
        connection.execute(text(
            "INSERT INTO model_version (id, owner, name, version, job_id, checkpoint_id, modality, dimensions, "
            "deployed, created_at) VALUES ('v1', 'alice', 'm', 1, 'j', 'c', 'text', 384, 1, '2026-12-01')"
        ))  # fmt: skip
    migrate(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT deployed, serve_precision FROM model_version")).one() == (1, None)
    migrate(url, "downgrade", "0001")  # and back, keeping the row
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM model_version")).scalars().all() == ["m"]
        assert "serve_precision" not in {c["name"] for c in inspect(connection).get_columns("model_version")}
    engine.dispose()
