"""The dashboard in a real browser: headless Debian Chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from core.data.readers import FORMATS
from core.store.db import transaction
from core.store.tables import Dataset, Job
from tests.api.test_embeddings import LiveServer
from tests.worker.test_job_lifecycle import upload, vectors_csv

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def logged_in(app, key: str) -> Iterator[tuple[str, Page]]:  # noqa: ANN001 - the FastAPI app
    """A live server for ``app``, and a headless Chromium page logged in to its dashboard with ``key``."""
    assert CHROMIUM, "chromium is not installed; `make test` installs it (.ci/browser.sh)"
    with LiveServer(app) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            refused: list[str] = []  # what the page's Content-Security-Policy blocked (api/ui/router.py)
            page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(f"{base}/ui")
            page.fill("#key", key)
            page.click("#login-form button[type=submit]")
            yield base, page
            assert refused == [], refused
        finally:
            browser.close()


@pytest.mark.slow
def test_dashboard_submits_a_job_watches_it_and_draws_its_curves(client, auth, worker) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    key = auth["Authorization"].removeprefix("Bearer ")
    dataset = upload(client, auth, vectors_csv(n=160))
    config = {
        "data": {"modality": "vectors", "val_fraction": 0.2},
        "model": {"kind": "mlp", "hidden_dim": 32, "output_dim": 16},
        "eval": {"knn_k": 5, "linear_probe": False},
        "train": {"epochs": 3, "batch_size": 16, "checkpoint_every_steps": 8},
    }
    with logged_in(client.app, key) as (base, page):
        expect(page.locator("[data-testid=jobs]")).to_be_visible()
        assert key not in page.url

        page.goto(f"{base}/ui/index.html#/new")
        page.select_option("[data-testid=dataset]", dataset["id"])
        page.fill("[data-testid=job-name]", "from-the-ui")
        page.fill("[data-testid=config]", json.dumps(config))
        page.click("[data-testid=submit]")
        status = page.locator("[data-testid=job-status]")
        expect(status).to_have_text("succeeded", timeout=120_000)  # the page refreshes itself while running
        page.reload()
        # the API's epoch 2 of a 3-epoch run, counted from 0; before, the page showed "epoch 2" for a finished run
        expect(page.locator("[data-testid=job-progress]")).to_contain_text("epoch 3 of 3")
        for chart in ("chart-loss", "chart-lr", "chart-temperature", "chart-geometry", "chart-accuracy",
                      "chart-diagnostics"):  # fmt: skip
            points = int(page.locator(f"[data-testid={chart}]").get_attribute("data-points"))
            assert points > 0, chart
        expect(page.locator("[data-testid=projection]")).to_have_attribute("data-points", "32", timeout=30_000)
        assert page.locator("[data-testid=events] li").count() >= 3
        page.screenshot(path=str(ARTIFACTS / "job.png"), full_page=True)

        (best,) = [c for c in client.get(f"/v1/jobs/{page.url.rsplit('/', 1)[-1]}/checkpoints", headers=auth).json()
                   if c["best"]]  # fmt: skip
        expect(page.locator(f"[data-testid=best-{best['step']}]")).to_have_text("best")
        assert page.locator("[data-testid=checkpoints] td", has_text="best").count() == 1
        page.fill("[data-testid=model-name-24]", "ui-model")
        page.click("[data-testid=register-24]")
        expect(page.locator("#notice")).to_have_text("registered ui-model v1")
        page.goto(f"{base}/ui/index.html#/models")
        expect(page.locator("[data-testid=models]")).to_contain_text("ui-model")
        page.click("[data-testid=models] button:has-text('Deploy')")
        expect(page.locator("[data-testid=models]")).to_contain_text("yes")
        with page.expect_download() as download:
            page.click("[data-testid=models] button:has-text('Weights')")
        assert download.value.suggested_filename == "ui-model-v1.safetensors"
        assert Path(download.value.path()).read_bytes()[8:9] == b"{"  # safetensors: a length, then its JSON header
        page.screenshot(path=str(ARTIFACTS / "models.png"), full_page=True)

        page.goto(f"{base}/ui/index.html#/jobs")
        expect(page.locator("[data-testid=jobs]")).to_contain_text("from-the-ui")
        page.screenshot(path=str(ARTIFACTS / "jobs.png"), full_page=True)

        # deletes: the job is refused while a model version uses its checkpoint, and says so on the page
        page.on("dialog", lambda dialog: dialog.accept())  # the confirm() before each delete
        page.click("[data-testid=jobs] a:has-text('from-the-ui')")
        page.click("[data-testid=delete-job]")
        expect(page.locator("#notice")).to_contain_text("ui-model version 1")
        page.goto(f"{base}/ui/index.html#/models")
        page.click("[data-testid=models] button:has-text('Undeploy')")
        page.click("[data-testid=models] button:has-text('Delete')")
        expect(page.locator("[data-testid=models]")).not_to_contain_text("ui-model")
        page.goto(f"{base}/ui/index.html#/jobs")
        page.click("[data-testid=jobs] a:has-text('from-the-ui')")
        page.click("[data-testid=delete-job]")
        expect(page.locator("[data-testid=jobs]")).not_to_contain_text("from-the-ui")


@pytest.mark.slow
def test_a_running_jobs_page_refreshes_in_place(client, auth, worker) -> None:
    """Every 2 s refresh of a running job's page keeps the model name typed beside a checkpoint and the picture's
    choice, and fetches the picture (held-out records embedded on the server) only when a checkpoint is chosen.
    Before, the refresh drew the page anew: what was typed vanished and the picture was fetched every time. Cancelled,
    the job is resumed from its page and runs again."""
    key = auth["Authorization"].removeprefix("Bearer ")
    dataset = upload(client, auth, vectors_csv(n=160))
    config = {  # runs for minutes unless cancelled; a checkpoint every 100 steps, all kept
        "data": {"modality": "vectors", "val_fraction": 0.2},
        "model": {"kind": "mlp", "hidden_dim": 32, "output_dim": 16},
        "eval": {"knn_k": 5, "linear_probe": False},
        "train": {"epochs": 10_000, "batch_size": 16, "checkpoint_every_steps": 100, "keep_checkpoints": None},
    }
    response = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset["id"], "config": config})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    with logged_in(client.app, key) as (base, page):
        pictures: list[str] = []
        page.on("request", lambda request: pictures.append(request.url) if "/projection" in request.url else None)
        page.goto(f"{base}/ui/index.html#/jobs/{job_id}")
        expect(page.locator("[data-testid=job-status]")).to_have_text("running", timeout=60_000)
        page.fill("[data-testid=model-name-100]", "typed-while-running")  # waits for the first checkpoint
        expect(page.locator("[data-testid=projection]")).to_have_attribute("data-points", "32", timeout=30_000)
        progress = page.locator("[data-testid=job-progress]")
        for _ in range(2):  # two refreshes, each seen as a step count that changed
            before = progress.text_content()
            expect(progress).not_to_have_text(before, timeout=10_000)
        assert page.input_value("[data-testid=model-name-100]") == "typed-while-running"
        assert len(pictures) == 1, pictures
        choice = page.locator("[data-testid=projection-checkpoint]")
        assert choice.locator("option").count() >= 2  # later checkpoints were added to the choice
        choice.select_option(label="step 100")
        expect(page.locator("[data-testid=projection]")).to_have_attribute("data-points", "32")
        assert len(pictures) == 2 and pictures[-1].endswith(
            f"checkpoint_id={choice.input_value()}&limit=400"
        ), pictures  # fmt: skip
        page.click("[data-testid=register-100]")
        expect(page.locator("#notice")).to_have_text("registered typed-while-running v1")
        page.click("[data-testid=cancel]")
        expect(page.locator("[data-testid=job-status]")).to_have_text("cancelled", timeout=60_000)
        page.click("[data-testid=resume]")  # queued again, and taken by the worker
        expect(page.locator("[data-testid=job-status]")).to_have_text("running", timeout=60_000)
        page.click("[data-testid=cancel]")
        expect(page.locator("[data-testid=job-status]")).to_have_text("cancelled", timeout=60_000)


@pytest.mark.slow
def test_the_jobs_table_pages_to_older_jobs(client, auth, settings) -> None:
    """More jobs than a page (100) are reached with "older" and "newer"; before, only the 100 newest were listed."""
    key = auth["Authorization"].removeprefix("Bearer ")
    dataset = upload(client, auth, vectors_csv(n=40))
    config = {"data": {"modality": "vectors"}, "train": {"batch_size": 4}}
    first = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset["id"], "config": config, "name": "job-0"})
    assert first.status_code == 202, first.text
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with transaction(settings) as session:
        template = session.get(Job, first.json()["id"])
        template.created_at = start
        session.add_all(Job(owner=template.owner, name=f"job-{i}", dataset_id=dataset["id"], config=template.config,
                            status="cancelled", queue=template.queue, created_at=start + timedelta(minutes=i))
                        for i in range(1, 105))  # fmt: skip
    with logged_in(client.app, key) as (base, page):
        pager, jobs = page.locator("[data-testid=jobs-pager]"), page.locator("[data-testid=jobs]")
        expect(pager).to_have_text("1-100 of 105 older")
        expect(jobs).to_contain_text("job-104")
        assert jobs.get_by_role("link", name="job-4", exact=True).count() == 0  # the 101st newest
        pager.locator("a", has_text="older").click()
        expect(pager).to_have_text("101-105 of 105 newer ")
        assert [page.locator("[data-testid=jobs] a").nth(i).text_content() for i in range(5)] == [
            "job-4", "job-3", "job-2", "job-1", "job-0"
        ]  # fmt: skip
        pager.locator("a", has_text="newer").click()
        expect(pager).to_have_text("1-100 of 105 older")


@pytest.mark.slow
def test_the_new_job_form_takes_a_dataset_beyond_those_listed_by_id(client, auth, keys, settings) -> None:
    """The form lists the 200 newest datasets; an older one is named by id (before, it could not be chosen at all),
    and a key without datasets is told to upload one."""
    key = auth["Authorization"].removeprefix("Bearer ")
    oldest = upload(client, auth, vectors_csv(n=40))
    with transaction(settings) as session:
        template = session.get(Dataset, oldest["id"])
        template.created_at = datetime(2026, 1, 1, tzinfo=UTC)
        session.add_all(Dataset(owner=template.owner, name=f"text-{i}", modality="text", format="jsonl",
                                storage_key=template.storage_key, size_bytes=1, sha256="0" * 64, num_records=100,
                                created_at=datetime(2026, 2, 1, tzinfo=UTC) + timedelta(minutes=i))
                        for i in range(200))  # fmt: skip
    with logged_in(client.app, key) as (base, page):
        page.goto(f"{base}/ui/index.html#/new")
        select = page.locator("[data-testid=dataset]")
        expect(select.locator("option")).to_have_count(200)
        assert select.locator(f"option[value='{oldest['id']}']").count() == 0
        expect(page.locator("#view")).to_contain_text("(the 200 newest of")
        assert json.loads(page.input_value("[data-testid=config]"))["data"]["modality"] == "text"
        page.fill("[data-testid=dataset-id]", oldest["id"])
        page.press("[data-testid=dataset-id]", "Tab")  # leaving the field: its modality fills the config in
        expect(page.locator("[data-testid=config]")).to_have_value(json.dumps(
            {"data": {"modality": "vectors", "val_fraction": 0.2}, "train": {"epochs": 5, "batch_size": 64}}, indent=2
        ))  # fmt: skip
        mine = json.dumps({"data": {"modality": "vectors"}, "train": {"batch_size": 8}})
        page.fill("[data-testid=config]", mine)  # an edited config stays whatever is chosen after
        select.select_option(index=1)
        expect(page.locator("[data-testid=dataset-id]")).to_have_value("")
        page.fill("[data-testid=dataset-id]", oldest["id"])
        with page.expect_response(lambda response: response.url.endswith(f"/v1/datasets/{oldest['id']}")):
            page.press("[data-testid=dataset-id]", "Tab")
        page.wait_for_timeout(300)  # the answer read and acted on
        assert page.input_value("[data-testid=config]") == mine
        page.click("[data-testid=submit]")
        expect(page.locator("[data-testid=job-status]")).to_have_text("queued")  # no worker here
        expect(page.locator("[data-testid=submit-error]")).to_have_count(0)
        job_id = page.url.rsplit("/", 1)[-1]
        assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["dataset_id"] == oldest["id"]
    with logged_in(client.app, keys.make("no-datasets")) as (base, page):
        page.goto(f"{base}/ui/index.html#/new")
        expect(page.locator("[data-testid=no-datasets]")).to_contain_text("upload one first")


@pytest.mark.slow
def test_the_new_job_form_starts_a_job_from_a_registered_model(client, auth, settings) -> None:
    """The form offers each registered version to start from; the job's page says which it started from."""
    from tests.api.test_embeddings import trained_model
    from tests.api.test_start_from import vectors

    name, _ = trained_model(settings, client, auth, "vectors", name=f"ui-base-{uuid.uuid4().hex[:8]}")
    dataset_id = vectors(client, auth)
    with logged_in(client.app, auth["Authorization"].removeprefix("Bearer ")) as (base, page):
        page.goto(f"{base}/ui/index.html#/new")
        page.select_option("[data-testid=dataset]", dataset_id)
        start = page.locator("[data-testid=start-from]")
        expect(start.locator("option").first).to_have_text("new weights")
        start.select_option(label=f"model {name} version 1 (vectors)")
        page.fill("[data-testid=config]", json.dumps({"data": {"val_fraction": 0}, "train": {"batch_size": 8}}))
        page.click("[data-testid=submit]")
        expect(page.locator("[data-testid=job-start]")).to_have_text(f"started from model {name} version 1")
        job = client.get(f"/v1/jobs/{page.url.rsplit('/', 1)[-1]}", headers=auth).json()
    assert job["start_from"]["model"] == name and job["config"]["model"]["output_dim"] == 12


@pytest.mark.slow
def test_the_new_job_form_says_every_problem_of_a_refused_config(client, auth) -> None:
    """Before, the form showed the API's first problem alone (``error.message``), as the CLI did: a config with three
    mistakes took three submissions. Now each of ``error.details`` is a line under the button."""
    upload(client, auth, vectors_csv(n=40))
    config = {"data": {"modality": "vectors"}, "model": {"hidden_dim": 2, "num_layers": 99}, "loss": {"temperature": 0}}
    with logged_in(client.app, auth["Authorization"].removeprefix("Bearer ")) as (_, page):
        page.click("text=New job")
        page.fill("[data-testid=config]", json.dumps(config))
        page.click("[data-testid=submit]")
        said = page.locator("[data-testid=submit-error]")
        expect(said).to_contain_text("config.loss.temperature")
        lines = said.inner_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["config.model.hidden_dim", "config.model.num_layers",
                                                      "config.loss.temperature"], lines  # fmt: skip


@pytest.mark.slow
def test_the_datasets_page_uploads_lists_starts_a_job_and_deletes(client, auth) -> None:
    """Before, the dashboard could not upload a dataset: a key without one was sent to the REST API or the CLI."""
    key = auth["Authorization"].removeprefix("Bearer ")
    with logged_in(client.app, key) as (base, page):
        page.goto(f"{base}/ui/index.html#/new")
        page.click("[data-testid=no-datasets] a")  # "upload one first on the datasets page"
        expect(page.locator("[data-testid=datasets-pager]")).to_have_text("none from 1  ")

        said = page.locator("[data-testid=upload-formats]").text_content()  # each modality's, as the readers take
        names = {"jsonl": "JSONL", "json": "JSON", "csv": "CSV", "parquet": "Parquet", "txt": "plain text",
                 "npy": "NPY", "zip": "ZIP", "npz": "NPZ"}  # fmt: skip
        for modality, heading in (("text", "Text:"), ("vectors", "Vectors:"), ("image", "Images:")):
            sentence = said.split(heading)[1].split(". ")[0]
            named = {fmt for fmt, name in names.items() if re.search(rf"\b{name}\b", sentence)}
            assert named == set(FORMATS[modality]), (modality, sentence)  # before: vectors "NPZ", text no Parquet

        page.set_input_files("[data-testid=upload-file]", files=[])
        page.click("[data-testid=upload]")
        expect(page.locator("#notice")).to_have_text("choose a file to upload")
        bad = {"name": "words.csv", "mimeType": "text/csv", "buffer": b"a,b\nx,y\n"}
        page.set_input_files("[data-testid=upload-file]", files=[bad])
        page.select_option("[data-testid=upload-modality]", "vectors")
        page.click("[data-testid=upload]")
        expect(page.locator("#notice")).to_contain_text("not numeric")  # the service's 422, on the page

        good = {"name": "points.csv", "mimeType": "text/csv", "buffer": vectors_csv(n=60)}
        page.set_input_files("[data-testid=upload-file]", files=[good])
        page.fill("[data-testid=upload-name]", "from-the-page")
        page.click("[data-testid=upload]")
        expect(page.locator("#notice")).to_have_text("uploaded from-the-page: 60 records, 3 labels")
        row = page.locator("[data-testid=datasets] tr", has_text="from-the-page")
        expect(row).to_contain_text("vectors")
        (listed,) = client.get("/v1/datasets", headers=auth).json()["items"]
        assert listed["name"] == "from-the-page" and listed["num_records"] == 60 and listed["id"] in row.text_content()
        page.screenshot(path=str(ARTIFACTS / "datasets.png"), full_page=True)

        row.locator("a", has_text="New job").click()  # the new job form, with this dataset chosen
        expect(page.locator("[data-testid=dataset]")).to_have_value(listed["id"])
        assert json.loads(page.input_value("[data-testid=config]"))["data"]["modality"] == "vectors"

        page.goto(f"{base}/ui/index.html#/datasets")
        page.on("dialog", lambda dialog: dialog.accept())
        page.locator("[data-testid=datasets] tr", has_text="from-the-page").locator("button").click()
        expect(page.locator("[data-testid=datasets]")).not_to_contain_text("from-the-page")
        assert client.get("/v1/datasets", headers=auth).json()["total"] == 0

        pairs = {"name": "q.csv", "mimeType": "text/csv", "buffer": b"query,passage\nwhere,there\nwho,them\n"}
        page.set_input_files("[data-testid=upload-file]", files=[pairs])
        page.select_option("[data-testid=upload-modality]", "text")
        page.fill("[data-testid=upload-name]", "")
        page.fill("[data-testid=upload-anchor-column]", "query")
        page.fill("[data-testid=upload-positive-column]", "passage")
        page.click("[data-testid=upload]")
        expect(page.locator("#notice")).to_have_text("uploaded q: 2 records")
        (stored,) = client.get("/v1/datasets", headers=auth).json()["items"]
        assert (stored["details"]["anchor_column"], stored["details"]["positive_column"]) == ("query", "passage")


@pytest.mark.slow
def test_a_page_left_before_its_answer_came_does_not_replace_the_next(client, auth) -> None:
    """A page's answer that comes after the user has moved on is dropped. Before, the jobs list (drawn at login and
    every 2 s) replaced the page the user had opened meanwhile when its answer came late, and its refresh timer ran
    beside the new page's. On a running job's page this drew the page anew, losing a model name being typed."""
    key = auth["Authorization"].removeprefix("Bearer ")
    held = []
    with logged_in(client.app, key) as (base, page):
        listing = re.compile(r".*/v1/jobs\?limit=.*")
        page.route(listing, lambda route: held.append(route))  # the list's answer waits until released
        with page.expect_request(listing):
            page.goto(f"{base}/ui/index.html#/jobs")
        page.goto(f"{base}/ui/index.html#/datasets")
        expect(page.locator("[data-testid=datasets-pager]")).to_be_visible()
        assert len(held) == 1, held
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))
        with page.expect_response(listing):
            held[0].continue_()
        page.unroute(listing)
        page.wait_for_timeout(500)  # the late answer's handling, were it to draw (it takes a millisecond)
        assert page.locator("[data-testid=datasets-pager]").is_visible()  # checked now, not awaited
        assert page.locator("[data-testid=jobs]").count() == 0
        page.wait_for_timeout(2_500)  # a refresh timer the list left behind would fire within 2 s
        assert asked == [], asked  # the datasets page does not refresh itself


def test_the_dashboards_files_forbid_framing_and_other_origins(client) -> None:
    """The page holds an API key: another site may not frame it (a click on its buttons there would be the key
    holder's) and it runs, fetches and styles only from its own origin. The browser tests above check that the page
    works under this policy (nothing refused)."""
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/index.html"
    for path in ("/ui/index.html", "/ui/app.js", "/ui/style.css"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        policy = dict(part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";"))
        assert policy["default-src"] == "'self'" and policy["frame-ancestors"] == "'none'", policy
        assert "unsafe-inline" not in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
