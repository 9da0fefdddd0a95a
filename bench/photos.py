"""Training on photo-sized images: a job's speed, memory and k-NN accuracy on full-size images, against the same
images shrunk beforehand.

    python bench/photos.py [--epochs 4] [--records 1797] [--out bench/results/photos.json]

The data: scikit-learn's digits as 384x512 colour "photos" (each digit pixel a 48x64 block) with per-pixel noise
of standard deviation 48, as a sensor adds. Two runs of the same config (a ResNet of width 16 on 32x32 inputs, 4
epochs, batch 128, 20% held out): one trains on the 384x512 images as an upload stores them; the other on the same
images shrunk (Lanczos) to 48x64 beforehand, as a careful user would send them. A model that sees 32x32 should
learn the same from both. Each run is a process of its own, so that its peak memory is its own: the figure is
the peak resident memory during training above what the process held before it (the dataset included).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.data import Records  # noqa: E402
from core.train.callbacks import CheckpointInfo, EvalReport, StepReport  # noqa: E402
from core.train.loop import fit  # noqa: E402

HEIGHT, WIDTH = 384, 512
NOISE = 48.0
SHRUNK = (48, 64)  # (H, W): 384x512 at an eighth, 1.5 times the model's 32 on the shorter side


def photos(records: int) -> Records:
    """The first ``records`` digits as (N, 3, 384, 512) uint8 images with sensor noise; seeded."""
    digits = load_digits()
    blocks = np.repeat(np.repeat(digits.images[:records] / 16.0 * 255, HEIGHT // 8, axis=1), WIDTH // 8, axis=2)
    rng = np.random.default_rng(0)
    images = np.empty((len(blocks), 3, HEIGHT, WIDTH), dtype=np.uint8)
    for index, block in enumerate(blocks):
        noisy = block[None] + rng.normal(0.0, NOISE, size=(3, HEIGHT, WIDTH))
        images[index] = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return Records("image", images=images, labels=digits.target[:records].astype(np.int64))


def shrunk(records: Records) -> Records:
    """The same records with each image shrunk to :data:`SHRUNK` by Pillow's Lanczos filter."""
    height, width = SHRUNK
    small = np.stack([
        np.stack([np.asarray(Image.fromarray(channel).resize((width, height), Image.Resampling.LANCZOS))
                  for channel in image])
        for image in records.images
    ])  # fmt: skip
    return Records("image", images=small, labels=records.labels)


def run_config(epochs: int) -> dict:
    return {
        "data": {"modality": "image", "val_fraction": 0.2},
        "model": {"kind": "resnet", "width": 16, "blocks": [1, 1], "image_size": 32},
        "loss": {"temperature": 0.2},
        "train": {"epochs": epochs, "batch_size": 128, "checkpoint_every_steps": 10**6, "device": "cpu"},
        "eval": {"at_start": False},  # measured as before eval.at_start: each epoch's evaluation alone
    }


class Recorder:
    """Keeps each step's samples/s and each evaluation's metrics."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.evaluations: list[dict[str, float]] = []

    def on_step(self, report: StepReport) -> None:
        self.rates.append(report.samples_per_s)

    def on_eval(self, report: EvalReport) -> None:
        self.evaluations.append(dict(report.metrics))

    def on_checkpoint(self, info: CheckpointInfo) -> None:
        return None


def resident_mb() -> float:
    """This process's resident memory now, MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 1e6


def reset_peak() -> None:
    """Start this process's peak resident memory (VmHWM) again from now (Linux 4.0 and later)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    """This process's peak resident memory since :func:`reset_peak`, MB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024 / 1e6


def train(variant: str, epochs: int, records_count: int) -> dict:
    """One run in this process: ``full`` (the 384x512 images) or ``shrunk``."""
    records = photos(records_count)
    if variant == "shrunk":
        records = shrunk(records)
    config = RunConfig.model_validate(run_config(epochs))
    train_records, val_records = records.split(config.data.val_fraction, config.train.seed)
    before = resident_mb()
    reset_peak()
    recorder = Recorder()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as checkpoints:
        result = fit(config, train_records, val_records, checkpoint_dir=Path(checkpoints), callback=recorder)
    wall = time.perf_counter() - started
    peak = peak_mb()
    return {
        "variant": variant,
        "image_shape": list(records.images.shape[1:]),
        "steps": result.step,
        "wall_s": round(wall, 2),
        "samples_per_s_median": round(statistics.median(recorder.rates[2:] or recorder.rates), 1),
        "peak_mb_above_start": round(peak - before, 1),
        "knn_top1_by_epoch": [round(e["knn_top1"], 4) for e in recorder.evaluations if "knn_top1" in e],
    }


def _child(variant: str, epochs: int, records: int, queue: multiprocessing.Queue) -> None:
    queue.put(train(variant, epochs, records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--records", type=int, default=1797, help="the first this many digits")
    parser.add_argument("--out", type=Path, default=Path("bench/results/photos.json"))
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    runs = []
    for variant in ("full", "shrunk"):
        queue = context.Queue()
        process = context.Process(target=_child, args=(variant, args.epochs, args.records, queue))
        process.start()
        runs.append(queue.get())
        process.join()
        print(json.dumps(runs[-1]))
    result = {"machine": describe(), "torch": torch.__version__, "records": args.records, "epochs": args.epochs,
              "noise_std": NOISE, "runs": runs}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
