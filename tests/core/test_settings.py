"""The environment's settings: a value that does not fit ends each process in a few lines naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.store.settings import get_settings
from tests.conftest import ROOT

ENTRY_POINTS = {
    "the API": [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--port", "0"],
    "a worker": [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool", "solo"],
    "an operator command": [sys.executable, "-m", "core.store.admin", "keys", "list"],
}


@pytest.mark.parametrize("process", ENTRY_POINTS)
def test_a_setting_that_does_not_fit_ends_the_process_naming_its_variable(process, tmp_path) -> None:
    """Before, each printed a traceback through the code that first read the settings, ending in pydantic's error
    about ``db_pool_size`` (the field, not the variable to change)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("EMBEDTRAIN_")}
    env.update(EMBEDTRAIN_DB_POOL_SIZE="ten", EMBEDTRAIN_STORAGE_ROOT=str(tmp_path), EMBEDTRAIN_ADMIN_KEY="et_x_y")
    done = subprocess.run(ENTRY_POINTS[process], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.endswith(
        "embedtrain: the environment's settings do not fit:\n"
        "  EMBEDTRAIN_DB_POOL_SIZE='ten': Input should be a valid integer, unable to parse string as an integer\n"
    ), done.stderr


def test_a_rule_between_settings_is_said_without_pydantics_prefix(monkeypatch) -> None:
    monkeypatch.setenv("EMBEDTRAIN_HEARTBEAT_S", "30")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as ended:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert str(ended.value.code) == (
        "embedtrain: the environment's settings do not fit:\n"
        "  EMBEDTRAIN_HEARTBEAT_S (30.0 s) must be under a third of EMBEDTRAIN_LEASE_S (60.0 s), so that a lease "
        "outlives two missed heartbeats; lower the heartbeat or lengthen the lease"
    )
