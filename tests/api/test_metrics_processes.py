"""/metrics of several API processes behind one port (uvicorn ``--workers``, as Compose runs the API): with
``PROMETHEUS_MULTIPROC_DIR`` every scrape reports the whole server's counts, whichever process answers it."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import Metrics
from tests.conftest import ROOT, free_port, settings_env


def healthz_count(families) -> float:  # noqa: ANN001 - metric families, from a scrape or from files
    return sum(sample.value for family in families for sample in family.samples
               if sample.name == "embedtrain_http_requests_total" and sample.labels.get("route") == "/healthz")  # fmt: skip


def per_process(shared: Path) -> dict[str, float]:
    """Each process's own /healthz count, read from its file."""
    return {path.stem.split("_")[-1]: healthz_count(MultiProcessCollector.merge([str(path)]))
            for path in shared.glob("counter_*.db")}  # fmt: skip


def test_every_scrape_counts_the_requests_of_every_api_process(settings, keys, tmp_path: Path) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**settings_env(settings), "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "2", "--log-level", "warning"],
                              cwd=ROOT, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(list(shared.glob("counter_*.db"))) < 2:
            time.sleep(0.2)  # each process creates its files as it builds the app
        assert len(list(shared.glob("counter_*.db"))) == 2, "two API processes did not start"

        def burst(_: int) -> None:  # a connection of its own: the kernel hands it to either process
            with httpx.Client(base_url=base, timeout=10) as connection:
                for _ in range(5):
                    connection.get("/healthz").raise_for_status()

        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while time.monotonic() < deadline:
                list(pool.map(burst, range(8)))
                sent += 40
                if sum(count > 0 for count in per_process(shared).values()) == 2:
                    break  # both processes have answered some
        counts = per_process(shared)
        assert sum(count > 0 for count in counts.values()) == 2, counts
        assert sum(counts.values()) == sent

        admin = {"Authorization": f"Bearer {keys.make('ops', admin=True)}"}
        for _ in range(6):  # each on a new connection, so either process may answer
            scrape = httpx.get(f"{base}/metrics", headers=admin, timeout=10)
            assert scrape.status_code == 200
            assert healthz_count(text_string_to_metric_families(scrape.text)) == sent
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()  # not left running; the assertions below then report what it did not clean up
            server.wait()
    assert not list(shared.glob("gauge_livesum_*.db"))  # each process left the live gauges' sums as it stopped
    assert len(list(shared.glob("counter_*.db"))) == 2  # its counts stay in the totals


GAUGE_WRITER = """
import os, sys
from prometheus_client import Gauge
Gauge("loaded", "Models loaded.", multiprocess_mode="livesum").set(1)
print("written", flush=True)
if sys.argv[1] == "killed":
    os._exit(0)  # no shutdown: as a process that was killed, its share stays in the files
sys.stdin.read()  # alive until the test closes stdin
"""


def loaded_sum(shared: Path) -> float:
    families = MultiProcessCollector.merge([str(path) for path in shared.glob("*.db")])
    return sum(sample.value for family in families for sample in family.samples if sample.name == "loaded")


def test_a_new_api_process_takes_killed_processes_out_of_the_live_gauges(settings, tmp_path: Path,
                                                                       monkeypatch) -> None:  # fmt: skip
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {**settings_env(settings), "PROMETHEUS_MULTIPROC_DIR": str(shared)}

    def writer(fate: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", GAUGE_WRITER, fate], env=env, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        assert process.stdout.readline().strip() == "written"
        return process

    killed = writer("killed")
    killed.wait(timeout=30)
    alive = writer("alive")
    try:
        assert loaded_sum(shared) == 2  # the dead process is still counted
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
        Metrics(settings)  # what each API process builds at start-up
        assert loaded_sum(shared) == 1
        assert not list(shared.glob(f"gauge_livesum_{killed.pid}.db"))
        assert list(shared.glob(f"gauge_livesum_{alive.pid}.db"))
    finally:
        alive.stdin.close()
        alive.wait(timeout=30)
