"""docker-compose.yml, checked by parsing (no Docker engine here); the commands it runs are the suite's."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_dependencies_and_health() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "worker-cpu"} <= set(services)
    for name in ("postgres", "redis", "api", "worker", "worker-cpu"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["command"] == ["sh", "-c", "embedtrain-admin migrate && embedtrain-admin bootstrap"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker", "worker-cpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_worker_reserves_a_gpu_and_a_cpu_only_worker_exists() -> None:
    services = compose()["services"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "--pool" in services["worker"]["command"] and "solo" in services["worker"]["command"]
    assert services["worker-cpu"]["profiles"] == ["cpu"] and "deploy" not in services["worker-cpu"]
    assert services["worker-cpu"]["command"][services["worker-cpu"]["command"].index("-Q") + 1] == "cpu"


def test_shared_volume_and_environment() -> None:
    doc = compose()
    services = doc["services"]
    for name in ("api", "worker", "worker-cpu", "migrate"):
        env = services[name]["environment"]
        assert env["EMBEDTRAIN_DATABASE_URL"].startswith("postgresql+psycopg://embedtrain:")
        assert env["EMBEDTRAIN_BROKER_URL"] == "redis://redis:6379/0"
        assert env["EMBEDTRAIN_STORAGE_ROOT"] == "/data"
        assert "data:/data" in services[name]["volumes"]
        assert services[name]["env_file"] == ".env"
    assert "data" in doc["volumes"]


def test_secrets_come_from_an_uncommitted_env_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text and "POSTGRES_PASSWORD:?" in text
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert ".env.example" in tracked and ".env" not in tracked
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_commands_point_at_real_entry_points() -> None:
    """The commands Compose runs are the ones the suite exercises (celery app, app factory, admin CLI)."""
    import importlib

    services = compose()["services"]
    assert importlib.import_module("worker.celery_app").app.main == "embedtrain-worker"
    assert callable(importlib.import_module("api.main").create_app)
    assert "api.main:create_app" in services["api"]["command"] and "--factory" in services["api"]["command"]
    assert "worker.celery_app" in services["worker"]["command"]
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'embedtrain-admin = "core.store.admin:app"' in scripts


def test_monitoring_profile_scrapes_the_api_and_the_workers() -> None:
    doc = compose()
    prometheus = doc["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"] and "embedtrain_admin_key" in prometheus["secrets"]
    assert doc["secrets"]["embedtrain_admin_key"] == {"environment": "EMBEDTRAIN_ADMIN_KEY"}
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job for job in config["scrape_configs"]}
    assert targets["embedtrain-api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert targets["embedtrain-api"]["authorization"]["credentials_file"] == "/run/secrets/embedtrain_admin_key"
    assert "worker:9108" in targets["embedtrain-workers"]["static_configs"][0]["targets"]
    assert doc["services"]["worker"]["environment"]["EMBEDTRAIN_WORKER_METRICS_PORT"] == "9108"


def test_the_api_processes_report_their_metrics_together() -> None:
    """The API runs several processes behind one port: a scrape reaches one of them, and reports every one's counts
    only through a shared, fresh directory (api/metrics.py; tests/api/test_metrics_processes.py runs it)."""
    services = compose()["services"]
    api = services["api"]
    processes = api["command"][api["command"].index("--workers") + 1]
    assert processes == "${API_PROCESSES:-2}"  # .env may set it; by default several
    assert "API_PROCESSES=" in (ROOT / ".env.example").read_text()
    assert api["environment"]["PROMETHEUS_MULTIPROC_DIR"] in api["tmpfs"]  # empty at each start of the container
    for name in ("worker", "worker-cpu"):  # one process each, serving its own metrics port
        assert "PROMETHEUS_MULTIPROC_DIR" not in services[name]["environment"]


def test_a_stopped_worker_has_time_to_hand_its_job_back() -> None:
    """docker stop sends SIGTERM, then SIGKILL after the grace period: the job needs a step and a checkpoint
    (worker/pipeline.py; tests/reliability/test_worker_faults.py makes it happen)."""
    for name in ("worker", "worker-cpu"):
        assert compose()["services"][name]["stop_grace_period"] == "2m"


def test_the_image_the_services_build_installs_the_project() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert all(service.get("build") == "." for name, service in compose()["services"].items()
               if name in ("api", "worker", "worker-cpu", "migrate"))  # fmt: skip
    for needed in ("COPY core core", "COPY api api", "COPY worker worker", "COPY migrations migrations",
                   "alembic.ini", "pip install"):  # fmt: skip
        assert needed in dockerfile, needed
    assert "USER app" in dockerfile and "api.main:create_app" in dockerfile


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    """Before there was no .dockerignore: `docker compose build` sent .env (the database password and the admin key),
    the .venv (gigabytes) and var/ (make run's datasets and checkpoints) to the builder."""
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv/", "var/", ".git/"} <= set(ignored)
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {source for line in dockerfile.splitlines() if line.startswith("COPY ") for source in line.split()[1:-1]}
    assert not copied & {entry.rstrip("/") for entry in ignored}, copied  # what the image needs is not left out


def test_the_image_installs_the_project_where_its_migrations_are() -> None:
    """`embedtrain-admin migrate` finds the migrations beside the code it imports (core/store/schema.py). Before, the
    image installed a copy of the code into site-packages, where there are none: the migrate service would have
    failed with "Path doesn't exist"."""
    from core.store.schema import MIGRATIONS

    assert MIGRATIONS == ROOT / "migrations" and (MIGRATIONS.parent / "alembic.ini").is_file()
    install = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if "pip install" in line)
    assert install.rstrip(" \\").endswith(" -e ."), install


def _migrate_service_env(database_url: str, admin_key: str) -> dict[str, str]:
    """The migrate service's environment: this database and admin key, and no other EMBEDTRAIN_ setting."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("EMBEDTRAIN_")}
    env.update(EMBEDTRAIN_DATABASE_URL=database_url, EMBEDTRAIN_ADMIN_KEY=admin_key,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")  # where embedtrain-admin is  # fmt: skip
    return env


def _run_migrate_service(env: dict[str, str]) -> subprocess.CompletedProcess:
    """The migrate service's command, run as Compose runs it."""
    return subprocess.run(compose()["services"]["migrate"]["command"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def _new_key() -> str:
    return f"et_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"  # as .env.example says to make one


def test_the_migrate_service_makes_the_env_files_admin_key_work(empty_pg, tmp_path, redis_url) -> None:
    """Its command, run as Compose runs it (twice: each `docker compose up` runs it again), leaves the database
    migrated and EMBEDTRAIN_ADMIN_KEY of .env an admin key. Before, it only migrated and nothing stored the key
    (.env.example said the api and worker imported it at start; neither did): every request with it, Prometheus'
    scrapes of /metrics included, answered 401."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.conftest import make_settings

    key = _new_key()
    env = _migrate_service_env(empty_pg, key)
    for _ in range(2):
        done = _run_migrate_service(env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines() == ["admin key taken from EMBEDTRAIN_ADMIN_KEY"], done.stdout
    example = next(line for line in (ROOT / ".env.example").read_text().splitlines()
                   if line.startswith("EMBEDTRAIN_ADMIN_KEY="))  # fmt: skip
    env["EMBEDTRAIN_ADMIN_KEY"] = example.split("=", 1)[1]  # .env copied and this line left as it is
    done = _run_migrate_service(env)
    assert done.returncode == 1 and done.stderr.splitlines()[-1].startswith(
        "error: EMBEDTRAIN_ADMIN_KEY is still .env.example's placeholder ('change-me'); set a secret one: "
    ), done.stderr
    with TestClient(create_app(make_settings(tmp_path, empty_pg, redis_url))) as client:
        placeholder = {"Authorization": f"Bearer {env['EMBEDTRAIN_ADMIN_KEY']}"}
        assert client.get("/v1/keys", headers=placeholder).status_code == 401
        keys = client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"})
        assert keys.status_code == 200, keys.text
        assert [(row["owner"], row["is_admin"], row["revoked_at"]) for row in keys.json()] == [("admin", True, None)]
        assert client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_a_new_admin_key_in_the_env_file_rotates_the_old_one(empty_pg, tmp_path, redis_url) -> None:
    """An operator whose admin key leaked puts a new one in .env and runs `docker compose up` again. Before, the
    old key stayed valid beside the new one until revoked by hand (and .env.example said so). Now the variable's
    earlier key is revoked; keys made otherwise are left alone; a revoked key put back there stays revoked."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.conftest import make_settings

    old, new = _new_key(), _new_key()
    assert _run_migrate_service(_migrate_service_env(empty_pg, old)).returncode == 0
    with TestClient(create_app(make_settings(tmp_path, empty_pg, redis_url))) as client:

        def status(key: str) -> int:
            return client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"}).status_code

        made = client.post("/v1/keys", headers={"Authorization": f"Bearer {old}"}, json={"owner": "ops", "admin": True})
        assert made.status_code == 201, made.text
        other = made.json()["key"]  # an admin key made through the API: no business of the variable's
        prefix = old.split("_")[1]
        rotated = _run_migrate_service(_migrate_service_env(empty_pg, new))
        assert rotated.returncode == 0 and rotated.stdout.splitlines() == [
            f"revoked the admin key EMBEDTRAIN_ADMIN_KEY held before (prefix {prefix})",
            "admin key taken from EMBEDTRAIN_ADMIN_KEY",
        ], rotated.stdout + rotated.stderr
        again = _run_migrate_service(_migrate_service_env(empty_pg, new))  # the next `up`: nothing more revoked
        assert again.stdout.splitlines() == ["admin key taken from EMBEDTRAIN_ADMIN_KEY"], again.stdout
        assert (status(old), status(new), status(other)) == (401, 200, 200)
        back = _run_migrate_service(_migrate_service_env(empty_pg, old))  # the leaked key put back by mistake
        assert back.returncode == 0 and back.stdout == "", back.stdout  # the stack still starts
        warning = back.stderr.splitlines()[-1]  # after Alembic's log of the migrate step
        assert warning.startswith(f"warning: EMBEDTRAIN_ADMIN_KEY is not an admin key: it was revoked (prefix {prefix}, "
                                  "at "), back.stderr  # fmt: skip
        assert warning.endswith(") and stays so; set a new one: python -c \"import secrets; print('et_' + "
                                "secrets.token_hex(6) + '_' + secrets.token_urlsafe(32))\""), warning  # fmt: skip
        assert (status(old), status(new), status(other)) == (401, 200, 200)
        listed = subprocess.run(["embedtrain-admin", "keys", "list"], env=_migrate_service_env(empty_pg, new),
                                capture_output=True, text=True, timeout=60).stdout.splitlines()  # fmt: skip
        marked = {line.split("prefix=")[1].split()[0]: line.endswith("from EMBEDTRAIN_ADMIN_KEY") for line in listed}
        assert marked == {prefix: True, new.split("_")[1]: True, other.split("_")[1]: False}, listed
        rows = client.get("/v1/keys", headers={"Authorization": f"Bearer {new}"}).json()  # and GET /v1/keys
        assert {row["prefix"]: row["from_environment"] for row in rows} == marked, rows
