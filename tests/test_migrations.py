"""The schema comes only from Alembic: it builds on PostgreSQL and SQLite, and matches the ORM tables; a database
without it is named as such, with the command that gives it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from core.store.schema import MIGRATE, head_revision
from core.store.tables import Base
from tests.conftest import ROOT, make_settings, migrate


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


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
def test_the_admin_key_stored_from_the_environment_before_0003_is_marked_so(engine, tmp_path, empty_pg) -> None:
    """bootstrap stored EMBEDTRAIN_ADMIN_KEY as an admin key named "bootstrap"; 0003 marks those, so that the
    variable's next value revokes the key it held before the upgrade too (core/store/keys.py)."""
    url = empty_pg if engine == "postgresql" else f"sqlite:///{tmp_path / 'keys.db'}"
    migrate(url, revision="0002")
    db = create_engine(url)
    with db.begin() as connection:
        for id_, name, admin in (("k1", "bootstrap", True), ("k2", "default", True), ("k3", "bootstrap", False)):
            connection.execute(text("INSERT INTO api_key (id, owner, name, prefix, key_hash, is_admin, created_at) "
                                    "VALUES (:id, 'admin', :name, :id, 'h', :admin, '2026-12-01')"),
                               {"id": id_, "name": name, "admin": admin})  # fmt: skip
    migrate(url, revision="0003")
    with db.connect() as connection:
        marked = connection.execute(text("SELECT id, from_environment FROM api_key ORDER BY id")).all()
    assert [(id_, bool(flag)) for id_, flag in marked] == [("k1", True), ("k2", False), ("k3", False)]
    migrate(url, "downgrade", "0002")
    with db.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM api_key")).scalar() == 3
    db.dispose()


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
def test_a_database_without_this_versions_schema_answers_503_naming_the_command(
    engine, tmp_path, empty_pg, redis_url
) -> None:  # fmt: skip
    """Before, an API started on a database the migrations were not run on answered each request with a bare 500
    ("Internal Server Error", PostgreSQL's "relation api_key does not exist" only in its log) while /readyz, the
    Compose health check, said ready."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    url = empty_pg if engine == "postgresql" else f"sqlite:///{tmp_path / 'empty.db'}"
    auth = {"Authorization": "Bearer et_0123456789ab_notakeyofanyone"}
    with TestClient(create_app(make_settings(tmp_path, url, redis_url))) as client:
        for answer in (client.get("/v1/jobs", headers=auth), client.get("/v1/jobs/some-id", headers=auth),
                       client.post("/v1/embeddings", headers=auth, json={"model": "m", "input": "a"})):  # fmt: skip
            error = answer.json()["error"]
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "30", answer.text
            assert "does not have this version's schema" in error["message"], error
            assert "run `embedtrain-admin migrate`" in error["message"], error
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["schema"].startswith(
            "the database has no embedtrain schema (no Alembic revision;"
        )

        migrate(url, revision="0001")  # an upgrade of the code whose new migration was not run
        schema = client.get("/readyz").json()["checks"]["schema"]
        assert schema.startswith(f"the database's schema is at revision 0001 and this version needs {head_revision()}:")

        migrate(url)
        assert client.get("/readyz").json() == {"status": "ready", "checks": {"database": "ok", "schema": "ok",
                                                                               "broker": "ok"}}  # fmt: skip
        assert client.get("/v1/jobs", headers=auth).status_code == 401  # the key is checked now: it is no one's


def admin(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EMBEDTRAIN_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "core.store.admin", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_the_admin_commands_say_in_one_line_what_is_wrong_with_the_database(empty_pg) -> None:
    """Before, each printed a rich traceback of SQLAlchemy's internals, 100 lines and more."""
    nobody = "postgresql+psycopg://embedtrain:secret@127.0.0.1:1/embedtrain"  # nothing listens on port 1
    for command in (("migrate",), ("keys", "list"), ("bootstrap",)):
        done = admin(nobody, *command)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("error: cannot use the database at postgresql+psycopg://embedtrain:***@"
                                      "127.0.0.1:1/embedtrain (EMBEDTRAIN_DATABASE_URL): connection failed"), done.stderr  # fmt: skip
        assert "secret" not in done.stderr
    for command in (("keys", "list"), ("keys", "create", "--owner", "alice"), ("bootstrap",)):
        done = admin(empty_pg, *command)
        assert done.returncode == 1 and done.stdout == "", (done.stdout, done.stderr)
        assert done.stderr == f"error: the database has no embedtrain schema (no Alembic revision; this version needs " \
                              f"{head_revision()}): {MIGRATE}\n"  # fmt: skip
    assert admin(empty_pg, "migrate").returncode == 0
    created = admin(empty_pg, "keys", "create", "--owner", "alice")
    assert created.returncode == 0 and created.stdout.startswith("et_"), created.stderr
    assert "owner=alice" in admin(empty_pg, "keys", "list").stdout


def test_the_sweeper_logs_a_missing_schema_in_one_line(tmp_path, empty_pg, redis_url, caplog) -> None:
    """Before, a worker on such a database logged "sweep failed" with a traceback at every sweep."""
    from worker.sweeper import sweep_logged

    with caplog.at_level(logging.WARNING, logger="embedtrain.worker"):
        sweep_logged(make_settings(tmp_path, empty_pg, redis_url))
    [record] = caplog.records
    assert record.levelname == "ERROR" and record.exc_info is None, record
    assert record.getMessage().startswith("sweep skipped: the database lacks this version's schema ((psycopg.errors"
                                          ".UndefinedTable) relation \"job\" does not exist"), record.getMessage()  # fmt: skip
    assert record.getMessage().endswith("run `embedtrain-admin migrate`")


def test_migrate_from_an_install_without_the_migrations_says_so(tmp_path) -> None:
    """The code copied alone, as a plain `pip install .` lays it out in site-packages: one line naming where the
    migrations were looked for and what to do, not alembic's traceback."""
    shutil.copytree(ROOT / "core", tmp_path / "core")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "EMBEDTRAIN_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    done = subprocess.run([sys.executable, "-m", "core.store.admin", "migrate"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"error: no migrations at {tmp_path / 'migrations'}: this install holds the code "
                                  "alone;"), done.stderr  # fmt: skip
