"""Fine-tuning a pretrained text model: which learning rate keeps what it knows.

    python bench/text_lr.py [--lrs 1e-3 3e-5] [--epochs 2] [--batch 64]

The data are real sentences that ship with Python: the first paragraph of the docstrings of the public
classes, functions and methods of 21 standard-library modules, labelled by module (1,370 texts with Python
3.11.7; modules with fewer than 15 are left out), split 70/30. The model is the service's default text run
(all-MiniLM-L6-v2, mean pooling, SimCSE dropout views, NT-Xent at tau 0.1, AdamW); only ``optim.lr`` changes.
Each learning rate trains through ``core.train.loop.fit`` and reports the held-out k-NN top-1, linear-probe
top-1, alignment and uniformity at each epoch's end; the untrained backbone's k-NN and probe are the baseline.
This is what the default rate for a pretrained backbone (``core.config.PRETRAINED_LR``) rests on. Writes
``bench/results/text-lr.json``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.data import Records  # noqa: E402
from core.encoders import build_model  # noqa: E402
from core.evaluate import knn_top1, linear_probe  # noqa: E402
from core.train.callbacks import NullCallback  # noqa: E402
from core.train.loop import fit  # noqa: E402

MODULES = ("email", "json", "asyncio", "unittest", "xml.etree.ElementTree", "http.client", "sqlite3", "logging",
           "argparse", "datetime", "pathlib", "tarfile", "zipfile", "socket", "subprocess", "threading",
           "decimal", "fractions", "statistics", "random", "collections", "itertools", "functools", "csv",
           "shutil", "tkinter", "turtle", "calendar", "smtplib", "ftplib")  # fmt: skip


def _summary(obj: object) -> str | None:
    doc = inspect.getdoc(obj)
    if not doc:
        return None
    first = re.split(r"\n\s*\n", doc)[0].replace("\n", " ").strip()
    return first if 30 < len(first) < 400 else None


def docstrings(min_per_module: int = 15) -> tuple[list[str], list[str]]:
    """(texts, module labels) of the standard library's docstrings, deduplicated, in a seeded order."""
    rows: dict[str, str] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # tkinter and turtle need the Tk bindings, which not every Python has
            continue
        top = name.split(".")[0]
        for attr, obj in inspect.getmembers(module):
            if attr.startswith("_") or (getattr(obj, "__module__", None) or name).split(".")[0] != top:
                continue
            members = inspect.getmembers(obj, inspect.isfunction) if inspect.isclass(obj) else []
            for candidate in [obj] + [m for a, m in members if not a.startswith("_")]:
                text = _summary(candidate)
                if text is not None:
                    rows.setdefault(text, top)
    counts = Counter(rows.values())
    pairs = [(text, label) for text, label in rows.items() if counts[label] >= min_per_module]
    random.Random(0).shuffle(pairs)
    return [t for t, _ in pairs], [label for _, label in pairs]


class Evals(NullCallback):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_eval(self, report) -> None:  # noqa: ANN001
        keep = ("knn_top1", "linear_probe_top1", "alignment", "uniformity", "val_loss")
        self.rows.append({"epoch": report.epoch + 1, **{k: round(report.metrics[k], 4) for k in keep}})


def run_config(lr: float | None, epochs: int, batch: int, backbone: str) -> RunConfig:
    optim = {} if lr is None else {"lr": lr}
    return RunConfig.model_validate({"data": {"modality": "text"}, "model": {"kind": "transformer", "backbone": backbone},
                                     "optim": optim, "train": {"epochs": epochs, "batch_size": batch,
                                     "checkpoint_every_steps": 10**6, "device": "cpu"},
                                     "eval": {"at_start": False}})  # the baseline: untrained() below  # fmt: skip


@torch.no_grad()
def untrained(config: RunConfig, train: Records, val: Records) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(config, train.spec).eval()

    def embed(texts: list[str]) -> np.ndarray:
        parts = [model.embed(model.backbone.tokenize(texts[i : i + 64])) for i in range(0, len(texts), 64)]
        return torch.cat(parts).numpy()

    e_train, e_val = embed(list(train.texts)), embed(list(val.texts))
    k = config.eval.knn_k
    return {"knn_top1": round(knn_top1(e_train, train.labels, e_val, val.labels, k), 4),
            "linear_probe_top1": round(linear_probe(e_train, train.labels, e_val, val.labels), 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-5])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="Use the first N texts (smoke runs).")
    parser.add_argument("--backbone", default="all-MiniLM-L6-v2")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "text-lr.json")
    args = parser.parse_args()
    torch.set_num_threads(2)

    texts, labels = docstrings()
    texts, labels = texts[: args.limit], labels[: args.limit]
    names = sorted(set(labels))
    records = Records("text", texts=texts, labels=np.array([names.index(x) for x in labels], dtype=np.int64))
    train, val = records.split(0.3, seed=0)
    result = {
        "machine": describe(),
        "python": sys.version.split()[0],
        "texts": len(texts),
        "modules": len(names),
        "backbone": args.backbone,
        "epochs": args.epochs,
        "batch": args.batch,
        "default_lr": run_config(None, args.epochs, args.batch, args.backbone).optim.lr,
        "untrained": untrained(run_config(None, 1, args.batch, args.backbone), train, val),
        "runs": [],
    }
    print(json.dumps(result["untrained"]), flush=True)
    for lr in args.lrs:
        evals = Evals()
        with tempfile.TemporaryDirectory() as directory:
            fit(run_config(lr, args.epochs, args.batch, args.backbone), train, val, checkpoint_dir=Path(directory),
                callback=evals)  # fmt: skip
        result["runs"].append({"lr": lr, "evals": evals.rows})
        print(json.dumps(result["runs"][-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
