"""Forward+backward time and peak memory of NT-Xent implementations, each configuration in its own process.

    python bench/loss.py                       # N in {256, 1k, 4k, 8k, 16k, 32k}, all implementations
    python bench/loss.py --sizes 1024 4096 --impls ours_dense ours_chunked
    python bench/loss.py --device cuda --precision bf16 --out bench/results/loss-cuda-bf16.json

Implementations: this project's dense and chunked paths, the usual hand-written loss (similarity matrix,
masked diagonal, cross-entropy over 2N rows), pytorch-metric-learning's ``NTXentLoss`` (the optional ``bench``
extra) and lightly's ``NTXentLoss`` (its module loaded from the wheel, see ``_load_lightly_ntxent``). Each child
caps its address space at ``--cap-gib`` more than it started with; an allocation past the cap is reported as
``oom``. Up to N=``--rounds-up-to`` (8192) the implementations run ``--rounds`` times, alternating, and the
median round is kept (this VM's noise flips close calls between single sweeps); up to N=4096 a round is the
median of at least 3 passes and 1 s of them. Peak memory is the child's peak
RSS minus its RSS before the loss ran (inputs already allocated). Writes JSON to ``bench/results/loss.json``
and prints a table.

On CUDA (``--device cuda``) each implementation runs all sizes in one process, ascending, and stops at its first
out-of-memory: a process per configuration would spend most of a short GPU lease starting CUDA. The cap is the
caching allocator's (``torch.cuda.set_per_process_memory_fraction``), peak memory is its peak allocation above
the inputs, and passes are timed between device synchronisations. ``--precision bf16`` runs each loss's forward
under bf16 autocast, as a training step would; the chunked path's rows per tile are chosen by a sweep at
``--sweep-n`` (the fastest, capped so that a tile holds at most ``--tile-mib``). Under bf16 our loss keeps its
similarity products in fp32 unless asked otherwise; ``ours_dense_bf16`` and ``ours_chunked_bf16`` are the same
paths with ``similarity_dtype=torch.bfloat16`` (``loss.similarity_dtype``), the products the libraries run in
bf16 under autocast. A CPU with AMX (``amx_bf16`` in /proc/cpuinfo) runs bf16 products on its tile unit, as a GPU
does on its tensor cores, and one with AVX512-BF16 (``avx512_bf16``) on its vector units at 2-4x its fp32 rate:
``--precision bf16`` works on the CPU too.
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
CUDA_SIZES = [*SIZES, 65536, 131072, 262144]  # on the GPU the chunked path goes further than the CPU's cap allows
CHUNK_SWEEP = [512, 1024, 2048, 4096, 8192, 16384]
IMPLS = ["ours_dense", "ours_chunked", "handwritten", "pytorch_metric_learning", "lightly"]
BF16_IMPLS = ["ours_dense_bf16", "ours_chunked_bf16"]  # ours with loss.similarity_dtype bfloat16; default under bf16
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


def _make(impl: str, tau: float, chunk: int, device):  # noqa: ANN001 - a torch.device
    import torch
    import torch.nn.functional as F

    if impl.startswith("ours_"):
        from core.losses import NTXentLoss

        chunk_size = chunk if impl.startswith("ours_chunked") else None
        similarity = torch.bfloat16 if impl.endswith("_bf16") else None
        loss = NTXentLoss(tau, chunk_size=chunk_size, similarity_dtype=similarity).to(device)
        return lambda a, b: loss(a, b)
    if impl == "handwritten":

        def handwritten(a, b):
            z = F.normalize(torch.cat([a, b]), dim=1)
            n = a.shape[0]
            sim = z @ z.T / tau
            sim.fill_diagonal_(float("-inf"))
            target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
            return F.cross_entropy(sim, target)

        return handwritten
    if impl == "pytorch_metric_learning":
        from pytorch_metric_learning.losses import NTXentLoss as PML

        loss = PML(temperature=tau)

        def pml(a, b):
            n = a.shape[0]
            labels = torch.arange(n, device=a.device).repeat(2)  # both views of sample i share label i
            return loss(torch.cat([a, b]), labels)

        return pml
    if impl == "lightly":
        loss = _load_lightly_ntxent()(temperature=tau, memory_bank_size=0)
        return lambda a, b: loss(a, b)
    raise ValueError(impl)


def child(impl: str, sizes: list[int], args: argparse.Namespace) -> list[dict]:
    """Measure ``impl`` at each of ``sizes`` in this process (one size per process on the CPU, see ``main``)."""
    import torch

    from core.allocator import keep_freed_memory

    # every implementation with the allocator setting of the service's processes: glibc's default trimming made
    # the (2N)^2 buffers page-fault afresh at every pass, in one implementation's process and not another's
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total))
    else:
        limit = _vm_bytes() + int(args.cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rows = []
    for n in sorted(sizes):
        repeats, min_seconds = (3, 1.0) if n <= 4096 else (1, 0.0)
        if args.device == "cuda":  # passes take milliseconds up to 32k: more of them, after a warm-up
            repeats, min_seconds = (5, 0.3) if n <= 32768 else (3, 0.0)
        rows.append(measure(impl, n, args, _chunk_for(n, args), repeats, min_seconds))
        if rows[-1]["status"] != "ok":
            break  # out of memory (or unavailable): larger N will not do better
    return rows


def _chunk_for(n: int, args: argparse.Namespace) -> int:
    """Rows per tile at N pairs: ``--chunk``, halved until a (K, 2N) fp32 tile fits in ``--tile-mib``."""
    chunk = args.chunk
    while args.tile_mib and chunk > 64 and chunk * 2 * n * 4 > args.tile_mib * 2**20:
        chunk //= 2
    return chunk


def measure(impl: str, n: int, args: argparse.Namespace, chunk: int, repeats: int, min_seconds: float) -> dict:
    """Forward+backward of one configuration: the median of ``repeats`` passes, or of as many more as fill
    ``min_seconds`` (at small N one pass takes milliseconds, and three of them were at the mercy of noise)."""
    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, D, generator=gen).to(device).requires_grad_(True)
    b = (a.detach() + 0.5 * torch.randn(n, D, generator=gen).to(device)).requires_grad_(True)
    try:
        fn = _make(impl, 0.1, chunk, device)
    except ImportError as error:
        return {"impl": impl, "n": n, "status": "unavailable", "error": str(error)}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    times, value = [], float("nan")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mib()
    try:
        if cuda:  # cuBLAS handles, kernels and the allocator's pool: once, outside the timed passes
            with autocast:
                loss = fn(a, b)
            loss.backward()
            a.grad = b.grad = None
            del loss
        began = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - began < min_seconds:
            a.grad = b.grad = None
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            with autocast:
                loss = fn(a, b)
            loss.backward()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            value = loss.item()
            del loss
    except (RuntimeError, MemoryError) as error:
        if not _out_of_memory(error):
            raise
        return {"impl": impl, "n": n, "status": "oom", "error": str(error).splitlines()[0][:200]}
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    row = {
        "impl": impl,
        "n": n,
        "status": "ok",
        "seconds": sorted(times)[len(times) // 2],
        "peak_extra_mib": round(peak, 1),
        "loss": value,
        "grad_sum": float(a.grad.double().abs().sum()),
    }
    if impl.startswith("ours_chunked"):
        row["chunk"] = chunk
    return row


def _out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, MemoryError | torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: forward under autocast")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"default {SIZES}; on CUDA {CUDA_SIZES}")
    parser.add_argument("--impls", nargs="+", choices=IMPLS + BF16_IMPLS, help="default: all (ours_*_bf16 under bf16)")
    parser.add_argument("--cap-gib", type=float, default=16.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--chunk", type=int, default=128, help="rows per block of the chunked path (128: tiles stay in cache)"
    )
    parser.add_argument("--chunk-sweep", type=int, nargs="*", help=f"CUDA: tile rows to try (default {CHUNK_SWEEP})")
    parser.add_argument("--sweep-n", type=int, default=32768, help="CUDA: N at which the tile sweep runs")
    parser.add_argument("--tile-mib", type=float, default=0, help="CUDA: largest tile; 0 means 2048 MiB")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds at N <= --rounds-up-to (median kept)")
    parser.add_argument("--rounds-up-to", type=int, default=8192, help="largest N run in rounds; above it one pass")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per process (on CUDA: all its sizes)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/loss.json"))
    parser.add_argument("--child", nargs="+", metavar="IMPL N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        for row in child(args.child[0], [int(n) for n in args.child[1:]], args):
            print(json.dumps(row), flush=True)
        return
    if args.impls is None:
        args.impls = IMPLS + (BF16_IMPLS if args.precision == "bf16" else [])
    if args.device == "cuda" and not args.tile_mib:
        args.tile_mib = 2048.0
    sizes = args.sizes or (CUDA_SIZES if args.device == "cuda" else SIZES)
    sweep = None
    if args.device == "cuda":
        sweep = _sweep_chunk(args)
        rows = _rows_on_cuda(sizes, args)
    else:
        rows = _rows_on_cpu(sizes, args)
    _check_agreement(rows, 1e-2 if args.precision == "bf16" else 1e-4)
    result = {
        "machine": describe(_accelerator(args.device)),
        "device": args.device,
        "threads": args.threads,
        "d": D,
        "dtype": "fp32",
        "precision": args.precision,
        "cap_gib": args.cap_gib,
        "chunk": args.chunk,
        "chunk_sweep": sweep,
        "tile_mib": args.tile_mib or None,
        "rounds": args.rounds if args.device == "cpu" else 1,
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


def _accelerator(device: str) -> str:
    if device != "cuda":
        return "no GPU"
    import torch

    return torch.cuda.get_device_name()


def _rows_on_cpu(sizes: list[int], args: argparse.Namespace) -> list[dict]:
    """Each (implementation, N) in its own process, alternating rounds up to ``--rounds-up-to``."""
    rows, failed = [], {}
    for n in sorted(sizes):
        rounds = args.rounds if n <= args.rounds_up_to else 1  # alternate the close calls; 16k+ take minutes each
        tries: dict[str, list[dict]] = {impl: [] for impl in args.impls}
        for _ in range(rounds):
            for impl in args.impls:
                if impl in failed:
                    continue
                (row,) = _run_child(impl, [n], args)
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
    return rows


def _rows_on_cuda(sizes: list[int], args: argparse.Namespace) -> list[dict]:
    """Each implementation in one process over all sizes (ascending, up to its first failure)."""
    found = {impl: {row["n"]: row for row in _run_child(impl, sizes, args)} for impl in args.impls}
    rows = []
    for n in sorted(sizes):
        for impl in args.impls:
            row = found[impl].get(n)
            if row is None:
                failure = next((r for r in found[impl].values() if r["status"] != "ok"), None)
                status = failure["status"] if failure else "error"
                row = {"impl": impl, "n": n, "status": status, "error": f"{status} at a smaller N"}
            rows.append(row)
            print(_format(row), flush=True)
    return rows


def _sweep_chunk(args: argparse.Namespace) -> dict:
    """Time the chunked path at ``--sweep-n`` for each tile height and keep the fastest as ``--chunk``."""
    seconds = {}
    for chunk in args.chunk_sweep or CHUNK_SWEEP:
        (row,) = _run_child("ours_chunked", [args.sweep_n], args, chunk=chunk, tile_mib=0)
        seconds[chunk] = row.get("seconds")
        print(f"{'ours_chunked tile':>24} K={chunk:>6}  {_format(row)}", flush=True)
    timed = {chunk: s for chunk, s in seconds.items() if s is not None}
    if timed:
        args.chunk = min(timed, key=timed.get)
    return {"n": args.sweep_n, "seconds_by_chunk": seconds, "chosen": args.chunk}


def _run_child(impl: str, sizes: list[int], args: argparse.Namespace, *, chunk: int | None = None,
               tile_mib: float | None = None) -> list[dict]:  # fmt: skip
    cmd = [sys.executable, __file__, "--child", impl, *map(str, sizes), "--cap-gib", str(args.cap_gib),
           "--threads", str(args.threads), "--chunk", str(chunk or args.chunk), "--device", args.device,
           "--precision", args.precision, "--tile-mib", str(args.tile_mib if tile_mib is None else tile_mib)]  # fmt: skip
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
        done = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        if len(done) == len(sizes):
            return done
        return done + [
            {
                "impl": impl,
                "n": sizes[len(done)],
                "status": "timeout",
                "error": f"the process ran over {args.timeout:.0f} s",
            }
        ]
    done = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if len(done) == len(sizes) or (done and done[-1]["status"] != "ok"):
        return done
    n = sizes[len(done)]
    if proc.returncode < 0 or "can't allocate memory" in proc.stderr or "MemoryError" in proc.stderr:
        return done + [{"impl": impl, "n": n, "status": "oom", "error": f"killed (rc {proc.returncode})"}]
    return done + [{"impl": impl, "n": n, "status": "error", "error": proc.stderr.strip()[-300:]}]


def _median_row(tries: list[dict]) -> dict:
    """One row from several rounds: the median time (each round's own time kept), the largest peak."""
    times = sorted(r["seconds"] for r in tries)
    row = dict(tries[0])
    row["seconds"] = statistics.median(times)
    row["peak_extra_mib"] = max(r["peak_extra_mib"] for r in tries)
    if len(tries) > 1:
        row["seconds_by_round"] = [r["seconds"] for r in tries]
    return row


def _check_agreement(rows: list[dict], tolerance: float) -> None:
    """Every implementation must compute the same loss as ours_dense (or ours_chunked) at the same N, within
    ``tolerance`` relative (1e-4 in fp32; bf16 autocast rounds the others' similarity products, not ours)."""
    for row in rows:
        if row["status"] != "ok":
            continue
        refs = [r for r in rows if r["n"] == row["n"] and r["impl"] in ("ours_dense", "ours_chunked")
                and r["status"] == "ok"]  # fmt: skip
        if refs:
            difference = abs(row["loss"] - refs[0]["loss"]) / max(1.0, abs(refs[0]["loss"]))
            row["relative_difference_from_ours"] = float(f"{difference:.3g}")
            row["agrees_with_ours"] = difference <= tolerance


def _format(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['impl']:>24} N={row['n']:>6}  {row['status']}"
    return (f"{row['impl']:>24} N={row['n']:>6}  {row['seconds']:8.3f} s  {row['peak_extra_mib']:9.1f} MiB  "
            f"loss={row['loss']:.6f}")  # fmt: skip


if __name__ == "__main__":
    main()
