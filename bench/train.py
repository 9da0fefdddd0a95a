"""Training throughput: a job through the service (API -> worker -> core) against a bare PyTorch loop.

    python bench/train.py [--steps 120] [--batch 256] [--rounds 7]
    python bench/train.py --device cuda --out bench/results/train-cuda.json   # bf16 autocast on the GPU

Same model (2-stage ResNet, width 16, 16x16 inputs), data (scikit-learn digits), views, loss, batch size and
steps. The service's samples/s is the median of the per-step series the worker records (the loop measures
each step; evaluation and checkpoint time are excluded); the bare loop is timed the same way, step by step.
Start-up latency is the time from ``POST /v1/jobs`` until the job reports its first step. Writes
``bench/results/train.json``. On CUDA both sides train under bf16 autocast unless ``--precision`` says otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402
from bench.service import Service, wait_job  # noqa: E402
from core.allocator import keep_freed_memory  # noqa: E402
from core.augment import build_views  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.data import Records  # noqa: E402
from core.encoders import build_model  # noqa: E402
from core.losses import NTXentLoss  # noqa: E402


def run_config(steps: int, batch: int, device: str, precision: str = "fp32") -> dict:
    return {
        "data": {"modality": "image", "val_fraction": 0.0},
        "model": {"kind": "resnet", "width": 16, "blocks": [1, 1], "image_size": 16},
        "loss": {"temperature": 0.2},
        "optim": {"lr": 1e-3},
        "train": {"epochs": 1000, "max_steps": steps, "batch_size": batch, "checkpoint_every_steps": 10**6,
                  "device": device, "precision": precision},
    }  # fmt: skip


def digits() -> Records:
    d = load_digits()
    images = np.round(d.images / 16.0 * 255).astype(np.uint8)[:, None]
    return Records("image", images=images, labels=d.target.astype(np.int64))


def bare_loop(config: RunConfig, records: Records, steps: int) -> list[float]:
    """A hand-written loop: index, views, forward, loss, backward, step. Returns samples/s of each step."""
    device = torch.device("cuda" if config.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_model(config, records.spec).to(device)
    images = torch.as_tensor(records.images, device=device)
    floats = images.float() / 255
    model.backbone.fit_normalisation(floats.mean(dim=(0, 2, 3), keepdim=True), floats.std(dim=(0, 2, 3), keepdim=True))
    views = build_views(config, None, records.spec.channels, None, device)
    loss_fn = NTXentLoss(config.loss.temperature)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.train.precision == "bf16")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    batch = config.train.batch_size
    per_epoch = len(records) // batch
    rates = []
    for step in range(steps):
        start = time.perf_counter()
        if step % per_epoch == 0:
            order = torch.randperm(len(records))
        rows = order[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
        x = images[rows.to(device)].float() / 255
        with autocast:
            z = model(views.stacked(x))[1]
            loss = loss_fn(*z.chunk(2))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        rates.append(batch / (time.perf_counter() - start))
    return rates


def through_service(steps: int, batch: int, device: str, precision: str) -> tuple[list[float], float, dict]:
    d = load_digits()
    buffer = io.BytesIO()
    np.savez(buffer, images=np.round(d.images / 16.0 * 255).astype(np.uint8), labels=d.target)
    with Service() as service, httpx.Client(base_url=service.base, headers=service.headers, timeout=60) as client:
        dataset = client.post("/v1/datasets", data={"modality": "image"}, files={"file": ("d.npz", buffer.getvalue())})
        dataset.raise_for_status()
        posted = time.perf_counter()
        job = client.post(
            "/v1/jobs", json={"dataset_id": dataset.json()["id"], "config": run_config(steps, batch, device, precision)}
        )
        job.raise_for_status()
        job_id = job.json()["id"]
        while client.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] == 0:
            time.sleep(0.02)
        startup = time.perf_counter() - posted
        final = wait_job(client, job_id)
        series = client.get(f"/v1/jobs/{job_id}/metrics").json()["series"]["samples_per_s"]
    return [p["value"] for p in series], startup, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default bf16 on CUDA, fp32 on the CPU")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the medians")
    parser.add_argument("--rounds", type=int, default=7, help="alternating bare/service runs")
    parser.add_argument("--out", type=Path, default=Path("bench/results/train.json"))
    args = parser.parse_args()
    keep_freed_memory()  # the bare loop (in this process) gets the allocator setting the worker runs with

    cuda = args.device != "cpu" and torch.cuda.is_available()
    precision = args.precision or ("bf16" if cuda else "fp32")
    config = RunConfig.model_validate(run_config(args.steps, args.batch, args.device, precision))
    bare_rates, service_rates, startups, statuses = [], [], [], []
    for index in range(args.rounds):
        # alternate, so slow phases of a shared machine hit both sides, and swap which goes first each round, so
        # that a machine slowing down over the run does not always find the same side second
        for side in ("bare", "service") if index % 2 == 0 else ("service", "bare"):
            if side == "bare":
                bare_rates.append(statistics.median(bare_loop(config, digits(), args.steps)[args.warmup :]))
                continue
            service, startup, job = through_service(args.steps, args.batch, args.device, precision)
            service_rates.append(statistics.median(service[args.warmup :]))
            startups.append(startup)
            statuses.append(job["status"])
    bare_rate, service_rate = statistics.median(bare_rates), statistics.median(service_rates)
    result = {
        "machine": describe(torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if cuda else "cpu",
        "precision": precision,
        "steps": args.steps,
        "batch_size": args.batch,
        "rounds": args.rounds,
        "bare_samples_per_s": round(bare_rate, 1),
        "service_samples_per_s": round(service_rate, 1),
        "ratio": round(service_rate / bare_rate, 3),
        "bare_per_round": [round(r, 1) for r in bare_rates],
        "service_per_round": [round(r, 1) for r in service_rates],
        "startup_latency_s": round(statistics.median(startups), 2),
        "startup_per_round": [round(s, 2) for s in startups],
        "job_status": statuses,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
