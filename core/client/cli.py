"""``embedtrain``: the command line over the REST API (typer + rich), built on :class:`core.client.Client`.

The URL and key come from EMBEDTRAIN_URL / EMBEDTRAIN_API_KEY or ``~/.config/embedtrain/config.toml``
(``url = "..."``, ``api_key = "..."``); ``--url`` and ``--key`` override both.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from core.client.client import ApiError, Client, default_settings, shrunk_as_read
from core.data.readers import DatasetError, ReadLimits, format_of_name, gunzip, is_gzip, read_records

app = typer.Typer(help="Train and serve contrastive embedding models over the embedtrain REST API.",
                  no_args_is_help=True)  # fmt: skip
datasets = typer.Typer(help="Upload, list, show and delete datasets.", no_args_is_help=True)
jobs = typer.Typer(help="Submit, list, show, watch, cancel, resume and delete training jobs; their checkpoints, events "
                   "and metrics.", no_args_is_help=True)  # fmt: skip
models = typer.Typer(help="Register, deploy, undeploy, list, download and delete models.", no_args_is_help=True)
keys = typer.Typer(help="Create, list and revoke API keys (creating needs an admin key).", no_args_is_help=True)
for sub, name in ((datasets, "datasets"), (jobs, "jobs"), (models, "models"), (keys, "keys")):
    app.add_typer(sub, name=name)

# what it prints comes from users and the server (names, messages): never read as rich's markup ("[/x]") or emoji
# codes (":warning:")
console = Console(markup=False, emoji=False)
T = TypeVar("T")
state: dict[str, str | None] = {"url": None, "key": None}


@app.callback()
def main(
    url: str | None = typer.Option(None, help="Service URL (default: EMBEDTRAIN_URL or the config file)."),
    key: str | None = typer.Option(None, help="API key (default: EMBEDTRAIN_API_KEY or the config file)."),
) -> None:
    state.update(url=url, key=key)


def client() -> Client:
    return Client(state["url"], state["key"])


def whole() -> bool:
    """Output goes to a pipe or a file (no terminal) and COLUMNS sets no width: lines are written whole rather than
    cut or wrapped at rich's 80 columns, so that `| grep` finds an id beside what names it."""
    return not console.is_terminal and not os.environ.get("COLUMNS")


def say(*parts: str | Text) -> None:
    """A line of text: at a terminal wrapped to its width; into a pipe or a file whole."""
    console.print(*parts, soft_wrap=whole())


def fail(error: ApiError) -> None:
    say(Text("error", style="red"), str(error))
    raise typer.Exit(1)


def confirm(what: str, yes: bool) -> None:
    """Ask before something that cannot be undone, unless ``--yes``; "no" (or no terminal to answer on) ends the
    command with exit code 1 having done nothing."""
    if not yes:
        typer.confirm(f"{what}? This cannot be undone", abort=True)


def call(action: Callable[[], T]) -> T:
    """Run one client call; an error answer, or no answer, is printed and ends the command with exit code 1."""
    try:
        return action()
    except ApiError as error:
        fail(error)
        raise  # unreachable: fail() exits
    except httpx.TransportError as error:  # nothing listens there, or it did not answer in time
        url = state["url"] or default_settings()[0]
        say(Text("error", style="red"), f"no answer from {url} ({type(error).__name__}: {error}); is the service "
            "running there? The URL comes from --url, EMBEDTRAIN_URL or the config file.")  # fmt: skip
        raise typer.Exit(1) from None


# columns never cut: ids and series names (people copy them into the next command), a job's status, a dataset's
# modality, and metric values (as _number writes them: at most 10 characters)
_WHOLE = {"id": 32, "job": 32, "series": len("neg_weight_entropy_ratio"), "status": len("succeeded"),
          "modality": len("vectors"), **dict.fromkeys(("val_loss", "knn_top1", "first", "last", "min", "max"), 10)}  # fmt: skip


def _table(*columns: str) -> Table:
    """A table whose ids, statuses and modalities keep their width; the other columns share what is left."""
    table = Table()
    for column in columns:
        if column in _WHOLE:
            table.add_column(column, no_wrap=True, min_width=_WHOLE[column])
        else:
            table.add_column(column)
    return table


def print_table(table: Table) -> None:
    """A table at the terminal's width; written to a pipe or a file, where rich would cut it to 80 columns (ids,
    dates and names ending in "…" under `| grep` or `> jobs.txt`), whole, unless COLUMNS sets a width."""
    (Console(width=100_000, markup=False, emoji=False) if whole() else console).print(table)


def show(data: object) -> None:
    console.print_json(json.dumps(data, default=str))


LIMIT = typer.Option(50, min=1, max=500, help="Rows to list (newest first).")
OFFSET = typer.Option(0, min=0, help="Rows to skip: the next page starts at offset + limit.")
YES = typer.Option(False, "--yes", "-y", help="Do it without asking first.")


def print_page(table: Table, page: dict) -> None:
    """The page's table, and where it sits among all rows when it does not hold them all."""
    print_table(table)
    shown, start, total = len(page["items"]), page["offset"], page["total"]
    if not shown and start:
        say(f"no rows from offset {start}; {total} in all")
    elif start + shown < total or start:
        after = f"; --offset {start + shown} for the next page" if start + shown < total else ""
        say(f"rows {start + 1}-{start + shown} of {total}{after}")


@datasets.command("upload")
def datasets_upload(
    path: Path = typer.Argument(
        ..., exists=True, help="The file; for images, also a directory of class folders (DIR/<class>/<image>.png)."
    ),
    modality: str = typer.Option(..., help="text, vectors or image"),
    name: str | None = typer.Option(None),
    format: str | None = typer.Option(None, help="Defaults to the file's extension."),
    label_column: str | None = typer.Option(
        None, help="The label column of a text or vectors file; named, it must be in the file (default: label, if any)."
    ),
    max_image_side: int = typer.Option(
        512,
        min=0,
        help="A directory's images larger than this on their longer side are sent shrunk to it, as the "
        "service reads them (its EMBEDTRAIN_MAX_IMAGE_SIDE, 512 by default); 0 sends them as they are.",
    ),
    text_column: str | None = typer.Option(None, help="A text file's column of texts, where it is not 'text'."),
    anchor_column: str | None = typer.Option(
        None, help="A text file of pairs: its column of anchors (a query), where it is not 'anchor'."
    ),
    positive_column: str | None = typer.Option(
        None, help="A text file of pairs: its column of positives (a passage), where it is not 'positive'."
    ),
) -> None:
    """Upload a dataset file, or a directory of class folders of images (sent as the ZIP the service reads)."""
    if path.is_dir() and modality != "image":
        raise typer.BadParameter(f"{path} is a directory: a directory uploads as an image dataset of class folders "
                                 "(--modality image); a text or vectors dataset is one file", param_hint="PATH")  # fmt: skip
    show(call(lambda: client().upload_dataset(path, modality, name, format, label_column, max_image_side or None,
                                              text_column=text_column, anchor_column=anchor_column,
                                              positive_column=positive_column)))  # fmt: skip


@datasets.command("list")
def datasets_list(limit: int = LIMIT, offset: int = OFFSET) -> None:
    """List datasets."""
    page = call(lambda: client().list_datasets(limit, offset))
    table = _table("id", "name", "modality", "records", "labels", "created")
    for d in page["items"]:
        table.add_row(
            d["id"], d["name"], d["modality"], str(d["num_records"]), str(d["num_labels"] or ""), d["created_at"][:19]
        )
    print_page(table, page)


@datasets.command("show")
def datasets_show(dataset_id: str) -> None:
    """Show a dataset: its records, labels, shape and the columns it was read with."""
    show(call(lambda: client().get_dataset(dataset_id)))


@datasets.command("delete")
def datasets_delete(dataset_id: str, yes: bool = YES) -> None:
    """Delete a dataset (its file too) that no queued or running job uses."""
    confirm(f"Delete dataset {dataset_id} and its file", yes)
    call(lambda: client().delete_dataset(dataset_id))
    say(f"deleted dataset {dataset_id}")


@jobs.command("submit")
def jobs_submit(
    dataset: str = typer.Option(..., help="Dataset id."),
    config: Path | None = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="Run config as a JSON file (default: every default); data.modality defaults to the dataset's.",
    ),
    name: str = typer.Option("job"),
    idempotency_key: str | None = typer.Option(None, help="Retrying with the same key creates one job."),
    start_from: str | None = typer.Option(
        None, help="Start from a registered model's weights: NAME (its newest version) or NAME:VERSION."
    ),
) -> None:
    """Submit a training job."""
    try:
        run_config = json.loads(config.read_bytes()) if config is not None else {}
    except ValueError as error:  # not JSON, or not UTF-8
        raise typer.BadParameter(f"{config} is not a JSON file: {error}", param_hint="--config") from None
    model, version = _model_and_version(start_from) if start_from else (None, None)
    show(call(lambda: client().submit_job(dataset, run_config, name, idempotency_key, start_from=model,
                                          start_version=version)))  # fmt: skip


def _model_and_version(text: str) -> tuple[str, int | None]:
    """NAME or NAME:VERSION."""
    name, _, version = text.partition(":")  # a model's name has no ':'
    if version and not version.isdigit():
        raise typer.BadParameter(f"{text!r}: the version after ':' must be a number", param_hint="--start-from")
    return name, int(version) if version else None


@jobs.command("list")
def jobs_list(status: str | None = typer.Option(None), limit: int = LIMIT, offset: int = OFFSET) -> None:
    """List jobs."""
    page = call(lambda: client().list_jobs(status, limit, offset))
    table = _table("id", "name", "status", "progress", "samples/s", "created")
    for j in page["items"]:
        rate = j["progress"]["samples_per_s"]
        table.add_row(j["id"], j["name"], j["status"], f"{j['progress']['fraction']:.0%}",
                      f"{rate:.0f}" if rate else "", j["created_at"][:19])  # fmt: skip
    print_page(table, page)


@jobs.command("show")
def jobs_show(job_id: str) -> None:
    """Show a job."""
    show(call(lambda: client().get_job(job_id)))


@jobs.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a job."""
    show(call(lambda: client().cancel_job(job_id)))


@jobs.command("resume")
def jobs_resume(job_id: str) -> None:
    """Queue a cancelled or failed job again: it goes on from its last checkpoint (or starts over without one)."""
    show(call(lambda: client().resume_job(job_id)))


@jobs.command("delete")
def jobs_delete(job_id: str, yes: bool = YES) -> None:
    """Delete a finished job with its metrics, events and checkpoints (files too)."""
    confirm(f"Delete job {job_id} with its metrics, events and checkpoints", yes)
    call(lambda: client().delete_job(job_id))
    say(f"deleted job {job_id}")


@jobs.command("watch")
def jobs_watch(job_id: str, poll: float = typer.Option(1.0, help="Seconds between polls.")) -> None:
    """Follow a job with a live progress bar (loss, samples/s, ETA) until it ends."""
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
               TextColumn("loss {task.fields[loss]}  {task.fields[rate]} samples/s"))  # fmt: skip
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(job_id[:8], total=None, loss="-", rate="-")

        def update(job: dict) -> None:
            p, loss = job["progress"], job["metrics"].get("loss")
            done = p["total_steps"] if job["status"] == "succeeded" else p["step"]  # succeeded: perhaps stopped early
            progress.update(task, total=p["total_steps"] or None, completed=done, description=job["status"],
                            loss=f"{loss:.4f}" if loss is not None else "-",
                            rate=f"{p['samples_per_s']:.0f}" if p["samples_per_s"] else "-")  # fmt: skip

        job = call(lambda: client().wait(job_id, poll_s=poll, on_update=update))
    say(f"{job_id} {job['status']}" + (f": {job['error']}" if job["error"] else ""))
    if job["status"] != "succeeded":
        raise typer.Exit(1)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


@jobs.command("checkpoints")
def jobs_checkpoints(job_id: str) -> None:
    """List a job's checkpoints, by step, with the held-out metrics of those written after an evaluation; an id
    (or last, or best) goes to `models register --checkpoint`."""
    rows = call(lambda: client().job_checkpoints(job_id))
    table = _table("id", "step", "epoch", "val_loss", "knn_top1")
    for c in rows:
        table.add_row(c["id"], str(c["step"]), str(c["epoch"]), _number(c["metrics"].get("val_loss")),
                      _number(c["metrics"].get("knn_top1")))  # fmt: skip
    print_table(table)
    if not rows:
        say(f"job {job_id} has no checkpoint yet")
    for c in (c for c in rows if c.get("best")):
        say(f"best (what --checkpoint best registers): step {c['step']}, {c['id']}")


@jobs.command("events")
def jobs_events(job_id: str) -> None:
    """List a job's events in order: queued, waiting, running, resumed (or started_from a model), requeued, stopped_early, how it ended (with the error), and resume_requested where its owner resumed it."""
    table = _table("time", "event", "message")
    for event in call(lambda: client().job_events(job_id)):
        table.add_row(event["created_at"][:19], event["kind"], event["message"])
    print_table(table)


@jobs.command("metrics")
def jobs_metrics(
    job_id: str,
    series: str | None = typer.Option(None, help="Print this series' every point (step, epoch, value)."),
) -> None:
    """Summarise each metric series of a job (first, last, min and max value), or print one series in full."""
    every = call(lambda: client().job_metrics(job_id))
    if series is not None:
        if series not in every:
            known = ", ".join(sorted(every)) or "none yet"
            raise typer.BadParameter(f"job {job_id} has no series {series!r}; its series: {known}",
                                     param_hint="--series")  # fmt: skip
        table = _table("step", "epoch", series)
        for point in every[series]:
            table.add_row(str(point["step"]), str(point["epoch"]), _number(point["value"]))
        print_table(table)
        return
    table = _table("series", "first", "last", "min", "max")
    for name, points in sorted(every.items()):
        values = [p["value"] for p in points]
        table.add_row(name, *(_number(v) for v in (values[0], values[-1], min(values), max(values))))
    print_table(table)
    if not every:
        say(f"job {job_id} has no metrics yet")


@models.command("register")
def models_register(
    job: str = typer.Option(..., help="Job id."),
    name: str = typer.Option(...),
    checkpoint: str = typer.Option("last", help="last, best, or a checkpoint id."),
) -> None:
    """Register a job's checkpoint as a new model version."""
    show(call(lambda: client().register_model(job, name, checkpoint)))


@models.command("deploy")
def models_deploy(
    name: str,
    version: int | None = typer.Option(None),
    precision: str | None = typer.Option(None, help="fp32 or bf16 (default: the server's EMBEDTRAIN_EMBED_PRECISION)."),
) -> None:
    """Deploy a model version (the newest by default)."""
    show(call(lambda: client().deploy(name, version, precision)))


@models.command("undeploy")
def models_undeploy(name: str) -> None:
    """Stop serving a model."""
    show(call(lambda: client().undeploy(name)))


@models.command("download")
def models_download(
    name: str,
    out: Path = typer.Option(..., file_okay=False, help="Directory to save model.safetensors in (made if missing)."),
    version: int | None = typer.Option(None, help="Default: the newest."),
) -> None:
    """Save a version's weights (with its run config) for core.inference.Embedder(OUT), offline."""
    say(f"saved {call(lambda: client().download_model(name, out, version))}")


@models.command("delete")
def models_delete(name: str, version: int | None = typer.Option(None, help="Only this version."),
                  yes: bool = YES) -> None:  # fmt: skip
    """Delete a model's versions, or one (undeploy first); its job and checkpoints stay."""
    confirm(f"Delete every version of model {name}" if version is None else f"Delete {name} version {version}", yes)
    versions = call(lambda: client().delete_model(name, version))["versions"]
    say(f"deleted {name} version{'s' if len(versions) > 1 else ''} {', '.join(map(str, versions))}")


@models.command("list")
def models_list() -> None:
    """List model versions."""
    entries = call(lambda: client().list_models())
    table = _table("name", "version", "modality", "dims", "deployed", "job")
    for m in (version for entry in entries for version in entry["versions"]):
        table.add_row(m["name"], str(m["version"]), m["modality"], str(m["dimensions"]), "yes" if m["deployed"] else "",
                      m["job_id"])  # fmt: skip
    print_table(table)


def stdin_texts() -> list[str]:
    """One text per line of stdin, so that row i of the output is line i + 1; blank lines at the end are dropped,
    one anywhere else is refused (skipping it would shift every later row against its line)."""
    try:
        lines = sys.stdin.buffer.read().decode("utf-8").removeprefix("\ufeff").splitlines()
    except UnicodeDecodeError as error:
        raise typer.BadParameter(f"stdin is not UTF-8 text (byte {error.start})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    blank = next((number for number, line in enumerate(lines, 1) if not line.strip()), None)
    if blank is not None:
        raise typer.BadParameter(f"line {blank} of stdin is blank: each line is one text and gets one output row")
    return lines


def vector_rows(path: Path) -> np.ndarray:
    """A vector model's inputs, one a row: a .npy, CSV or Parquet file (by its extension; any other is read as a
    .npy), gzipped or not, read as a vectors dataset is at upload, with its checks (2-D, numeric or boolean, finite;
    a CSV or Parquet file's label column left out), so that a file of the kind a model was trained on embeds as it
    is."""
    fmt = format_of_name(path.name)
    fmt = fmt if fmt in ("csv", "parquet") else "npy"
    try:
        if not is_gzip(path):
            return read_records(path, "vectors", fmt, ReadLimits()).vectors
        with tempfile.TemporaryDirectory() as scratch:
            return read_records(gunzip(path, Path(scratch) / f"rows.{fmt}"), "vectors", fmt, ReadLimits()).vectors
    except DatasetError as error:
        raise typer.BadParameter(f"{path}: {error}", param_hint="--vectors") from None


def image_inputs(paths: list[Path], max_image_side: int | None) -> list[str]:
    """An image model's inputs in base64: each file's bytes, or, where it is larger than ``max_image_side`` on its
    longer side, its pixels as the service reads them, shrunk, as a PNG (a phone's photo 0.6 MB at most instead of
    ~3, and the same embedding). The service reads the formats of :data:`~core.data.readers.IMAGE_FORMATS`, and
    says which input it could not."""
    inputs = []
    for path in paths:
        shrunk = shrunk_as_read(path, path.name, max_image_side) if max_image_side else None
        inputs.append(base64.b64encode(shrunk or path.read_bytes()).decode())
    return inputs


@app.command()
def embed(
    texts: list[str] = typer.Argument(None, help="Texts to embed; read one per line from stdin if none."),
    model: str = typer.Option(...),
    vectors_file: Path | None = typer.Option(
        None,
        "--vectors",
        exists=True,
        dir_okay=False,
        help="For a vector model: a .npy of shape (n, features), or a CSV or Parquet file as vectors datasets are "
        "uploaded (a label column is left out); one input a row.",
    ),
    images: list[Path] = typer.Option(
        None,
        "--image",
        exists=True,
        dir_okay=False,
        help="For an image model: an image file (PNG, JPEG, ...); repeat for more.",
    ),
    max_image_side: int = typer.Option(
        512,
        min=0,
        help="--image files larger than this on their longer side are sent shrunk to it, as the service reads them "
        "(its EMBEDTRAIN_MAX_IMAGE_SIDE, 512 by default); 0 sends them as they are.",
    ),
    dimensions: int | None = typer.Option(None),
    output: str = typer.Option("json", help="json (to stdout) or npy (to --out, else stdout)."),
    out: Path | None = typer.Option(None, dir_okay=False, help="File for npy output."),
    batch_size: int = typer.Option(256, min=1, help="Inputs per request (the server takes at most 2048 by default)."),
) -> None:
    """Embed texts, vectors (--vectors) or images (--image) with a deployed model: one output row per input, in
    order."""
    if output not in ("json", "npy"):
        raise typer.BadParameter(f"{output!r} is not one of 'json', 'npy'", param_hint="--output")
    if out is not None and not out.parent.is_dir():  # said before the inputs are embedded, not after
        raise typer.BadParameter(f"{out.parent} is not a directory", param_hint="--out")
    if images and texts:  # what `--image *.png` gives: the shell's first file to --image, the others as texts
        raise typer.BadParameter(f"each image file needs its own --image (--image a.png --image b.png); "
                                 f"{texts[0]!r}{f' and {len(texts) - 1} more' if len(texts) > 1 else ''} came as "
                                 "texts, as a shell glob after --image gives them", param_hint="--image")  # fmt: skip
    if sum(map(bool, (texts, vectors_file, images))) > 1:
        raise typer.BadParameter("give texts, --vectors or --image, one kind of input at a time")
    if vectors_file is not None:
        inputs = vector_rows(vectors_file)
    elif images:
        inputs = image_inputs(images, max_image_side or None)
    else:
        inputs = texts or stdin_texts()
    if not len(inputs):
        raise typer.BadParameter("nothing to embed: give texts as arguments or one per line on stdin, a --vectors "
                                 "file with rows, or --image files")  # fmt: skip
    vectors = call(lambda: client().embed(model, inputs, dimensions, batch_size))
    if output == "npy":
        if out is None:
            buffer = io.BytesIO()
            np.save(buffer, vectors)
            sys.stdout.buffer.write(buffer.getvalue())
        else:
            np.save(out, vectors)
    else:
        typer.echo(json.dumps(vectors.tolist()))


@keys.command("create")
def keys_create(owner: str = typer.Option(...), name: str = typer.Option("default"), admin: bool = False) -> None:
    """Create a key (shown once)."""
    show(call(lambda: client().create_key(owner, name, admin)))


@keys.command("list")
def keys_list() -> None:
    """List your keys (an admin key: everyone's); the keys themselves are never shown again."""
    rows = call(lambda: client().list_keys())
    table = _table("id", "prefix", "owner", "name", "admin", "created", "revoked")
    for k in rows:
        admin = ("yes, EMBEDTRAIN_ADMIN_KEY" if k.get("from_environment") else "yes") if k["is_admin"] else ""
        table.add_row(k["id"], k["prefix"], k["owner"], k["name"], admin, k["created_at"][:19],
                      (k["revoked_at"] or "")[:19])  # fmt: skip
    print_table(table)


@keys.command("revoke")
def keys_revoke(key_id: str, yes: bool = YES) -> None:
    """Revoke a key by id or prefix."""
    confirm(f"Revoke key {key_id} (requests with it are refused from then on)", yes)
    show(call(lambda: client().revoke_key(key_id)))


if __name__ == "__main__":
    app()
