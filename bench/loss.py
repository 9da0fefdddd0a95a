"""Forward+backward time and peak memory of NT-Xent implementations, each configuration in its own process.

    python bench/loss.py                       # N in {256, 1k, 4k, 8k, 16k, 32k}, all implementations
    python bench/loss.py --sizes 1024 4096 --impls ours_dense ours_chunked

Implementations: this project's dense and chunked paths, the usual hand-written loss (similarity matrix,
masked diagonal, cross-entropy over 2N rows), pytorch-metric-learning's ``NTXentLoss`` (the optional ``bench``
extra) and lightly's ``NTXentLoss`` (its module loaded from the wheel, see ``_load_lightly_ntxent``). Each child
caps its address space at ``--cap-gib`` more than it started with; an allocation past the cap is reported as
``oom``. Up to N=``--rounds-up-to`` (8192) the implementations run ``--rounds`` times, alternating, and the
median round is kept (this VM's noise flips close calls between single sweeps); up to N=4096 a round is the
median of at least 3 passes and 1 s of them. Peak memory is the child's peak
RSS minus its RSS before the loss ran (inputs already allocated). Writes JSON to ``bench/results/loss.json``
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402

D = 128
SIZES = [256, 1024, 4096, 8192, 16384, 32768]
IMPLS = ["ours_dense", "ours_chunked", "handwritten", "pytorch_metric_learning", "lightly"]
CACHE = Path(__file__).resolve().parent / ".cache"


def _load_lightly_ntxent():
    """lightly's NTXentLoss from its wheel (``make bench`` fetches it with --no-deps), without its package.

    ``lightly.loss`` imports torchvision, which has no CPU build here. ``ntx_ent_loss.py`` itself needs only
    torch, ``lightly.utils.dist`` (torch only, loaded from the wheel) and ``MemoryBankModule``, which is used
    only when ``memory_bank_size > 0``; that class is a placeholder here and the benchmark keeps the size 0.
    """
    import sys
    import types
    import zipfile

    try:
        from lightly.loss import NTXentLoss

        return NTXentLoss
    except ImportError:
        pass
    wheels = sorted(CACHE.glob("lightly-*.whl"))
    if not wheels:
        raise ImportError("lightly is not installed and no wheel in bench/.cache (run `make bench`)")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        sources = {name: wheel.read(f"lightly/{name}").decode() for name in ("utils/dist.py", "loss/ntx_ent_loss.py")}

    def module(name: str, source: str | None = None, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        if source is not None:
            exec(compile(source, f"<lightly wheel>/{name}", "exec"), mod.__dict__)
        return mod

    import torch

    class MemoryBankModule(torch.nn.Module):
        """What lightly's module does at size 0: pass the output through and give no negatives."""

        def __init__(self, size=0, gather_distributed=False) -> None:  # noqa: ANN001 - lightly's signature
            super().__init__()
            if size not in (0, (0,)):
                raise NotImplementedError("the benchmark loads lightly's loss without its memory bank")

        def forward(self, output, labels=None, update=False):  # noqa: ANN001, ANN201
            return output, None

    dist = module("lightly.utils.dist", sources["utils/dist.py"])
    module("lightly", __path__=[]), module("lightly.utils", __path__=[], dist=dist)
    module("lightly.models", __path__=[]), module("lightly.models.modules", __path__=[])
    module("lightly.models.modules.memory_bank", MemoryBankModule=MemoryBankModule)
    return module("lightly.loss.ntx_ent_loss", sources["loss/ntx_ent_loss.py"]).NTXentLoss


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _vm_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _make(impl: str, tau: float, chunk: int):
    import torch
    import torch.nn.functional as F

    if impl == "ours_dense":
        from core.losses import NTXentLoss

        loss = NTXentLoss(tau)
        return lambda a, b: loss(a, b)
    if impl == "ours_chunked":
        from core.losses import NTXentLoss

        loss = NTXentLoss(tau, chunk_size=chunk)
        return lambda a, b: loss(a, b)
    if impl == "handwritten":

        def handwritten(a, b):
            z = F.normalize(torch.cat([a, b]), dim=1)
            n = a.shape[0]
            sim = z @ z.T / tau
            sim.fill_diagonal_(float("-inf"))
            target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
            return F.cross_entropy(sim, target)

        return handwritten
    if impl == "pytorch_metric_learning":
        from pytorch_metric_learning.losses import NTXentLoss as PML

        loss = PML(temperature=tau)

        def pml(a, b):
            n = a.shape[0]
            labels = torch.arange(n).repeat(2)  # both views of sample i share label i
            return loss(torch.cat([a, b]), labels)

        return pml
    if impl == "lightly":
        loss = _load_lightly_ntxent()(temperature=tau, memory_bank_size=0)
        return lambda a, b: loss(a, b)
    raise ValueError(impl)


def child(impl: str, n: int, cap_gib: float, threads: int, chunk: int, repeats: int, min_seconds: float = 0.0) -> dict:
    """Run one configuration and return its measurements: the median of ``repeats`` passes, or of as many more as
    fill ``min_seconds`` (at small N one pass takes milliseconds, and three of them were at the mercy of noise)."""
    import torch

    from core.allocator import keep_freed_memory

    # every implementation with the allocator setting of the service's processes: glibc's default trimming made
    # the (2N)^2 buffers page-fault afresh at every pass, in one implementation's process and not another's
    keep_freed_memory()
    torch.set_num_threads(threads)
    limit = _vm_bytes() + int(cap_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, D, generator=gen).requires_grad_(True)
    b = (a.detach() + 0.5 * torch.randn(n, D, generator=gen)).requires_grad_(True)
    try:
        fn = _make(impl, 0.1, chunk)
    except ImportError as error:
        return {"impl": impl, "n": n, "status": "unavailable", "error": str(error)}
    times, value = [], float("nan")
    base = _rss_mib()
    try:
        began = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - began < min_seconds:
            a.grad = b.grad = None
            start = time.perf_counter()
            loss = fn(a, b)
            loss.backward()
            times.append(time.perf_counter() - start)
            value = loss.item()
            del loss
    except (RuntimeError, MemoryError) as error:
        if "can't allocate memory" not in str(error) and not isinstance(error, MemoryError):
            raise
        return {"impl": impl, "n": n, "status": "oom", "error": str(error).splitlines()[0][:200]}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {
        "impl": impl,
        "n": n,
        "status": "ok",
        "seconds": sorted(times)[len(times) // 2],
        "peak_extra_mib": round(peak, 1),
        "loss": value,
        "grad_sum": float(a.grad.double().abs().sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--impls", nargs="+", default=IMPLS, choices=IMPLS)
    parser.add_argument("--cap-gib", type=float, default=16.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--chunk", type=int, default=128, help="rows per block of the chunked path (128: tiles stay in cache)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds at N <= --rounds-up-to (median kept)")
    parser.add_argument("--rounds-up-to", type=int, default=8192, help="largest N run in rounds; above it one pass")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    parser.add_argument("--out", type=Path, default=Path("bench/results/loss.json"))
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n = int(args.child[1])
        repeats, min_seconds = (3, 1.0) if n <= 4096 else (1, 0.0)
        print(json.dumps(child(args.child[0], n, args.cap_gib, args.threads, args.chunk, repeats, min_seconds)))
        return

    rows, failed = [], {}
    for n in sorted(args.sizes):
        rounds = args.rounds if n <= args.rounds_up_to else 1  # alternate the close calls; 16k+ take minutes each
        tries: dict[str, list[dict]] = {impl: [] for impl in args.impls}
        for _ in range(rounds):
            for impl in args.impls:
                if impl in failed:
                    continue
                row = _run_child(impl, n, args)
                tries[impl].append(row)
                if row["status"] != "ok":
                    failed[impl] = row["status"]  # out of memory (or unavailable): larger N will not do better
        for impl in args.impls:
            if not tries[impl]:  # it failed at a smaller N already
                rows.append({"impl": impl, "n": n, "status": failed[impl], "error": f"{failed[impl]} at a smaller N"})
                continue
            row = next((r for r in tries[impl] if r["status"] != "ok"), None) or _median_row(tries[impl])
            rows.append(row)
            print(_format(row), flush=True)
    _check_agreement(rows)
    result = {
        "machine": describe(),
        "threads": args.threads,
        "d": D,
        "dtype": "fp32",
        "cap_gib": args.cap_gib,
        "chunk": args.chunk,
        "rounds": args.rounds,
        "rounds_up_to_n": args.rounds_up_to,
        "rows": rows,
        "largest_n": {
            impl: max((r["n"] for r in rows if r["impl"] == impl and r["status"] == "ok"), default=None)
            for impl in args.impls
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["largest_n"]))


def _run_child(impl: str, n: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, str(n), "--cap-gib", str(args.cap_gib),
           "--threads", str(args.threads), "--chunk", str(args.chunk)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"impl": impl, "n": n, "status": "timeout", "error": f"over {args.timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    if proc.returncode < 0 or "can't allocate memory" in proc.stderr or "MemoryError" in proc.stderr:
        return {"impl": impl, "n": n, "status": "oom", "error": f"killed (rc {proc.returncode})"}
    return {"impl": impl, "n": n, "status": "error", "error": proc.stderr.strip()[-300:]}


def _median_row(tries: list[dict]) -> dict:
    """One row from several rounds: the median time (each round's own time kept), the largest peak."""
    times = sorted(r["seconds"] for r in tries)
    row = dict(tries[0])
    row["seconds"] = statistics.median(times)
    row["peak_extra_mib"] = max(r["peak_extra_mib"] for r in tries)
    if len(tries) > 1:
        row["seconds_by_round"] = [r["seconds"] for r in tries]
    return row


def _check_agreement(rows: list[dict]) -> None:
    """Every implementation must compute the same loss as ours_dense (or ours_chunked) at the same N."""
    for row in rows:
        if row["status"] != "ok":
            continue
        refs = [r for r in rows if r["n"] == row["n"] and r["impl"] in ("ours_dense", "ours_chunked")
                and r["status"] == "ok"]  # fmt: skip
        if refs:
            row["agrees_with_ours"] = abs(row["loss"] - refs[0]["loss"]) <= 1e-4 * max(1.0, abs(refs[0]["loss"]))


def _format(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['impl']:>24} N={row['n']:>6}  {row['status']}"
    return (f"{row['impl']:>24} N={row['n']:>6}  {row['seconds']:8.3f} s  {row['peak_extra_mib']:9.1f} MiB  "
            f"loss={row['loss']:.6f}")  # fmt: skip


if __name__ == "__main__":
    main()
