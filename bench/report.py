"""Print the README's benchmark tables from the JSON the benchmarks wrote.

python bench/report.py                     # bench/results: the CPU loss and serving tables, the API run
python bench/report.py bench/results/gpu   # a folder of bench/gpu.sh: its loss tables and training figures
python bench/report.py bench/results/xeon-amx   # any folder of loss*.json / train*.json / serve*.json / api*.json / photos*.json
                                                # / text-lr*.json
python bench/report.py --serving-across bench/results   # every serving run under a folder, one row each, oldest first
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def loss_table(path: Path = RESULTS / "loss.json") -> str:
    data = json.loads(path.read_text())
    impls = list(data["largest_n"])
    by_n: dict[int, dict[str, dict]] = {}
    for row in data["rows"]:
        by_n.setdefault(row["n"], {})[row["impl"]] = row
    lines = ["| N pairs (2N embeddings) | " + " | ".join(impls) + " |", "|---|" + "---|" * len(impls)]
    for n in sorted(by_n):
        cells = []
        for impl in impls:
            row = by_n[n].get(impl)
            if row is None:
                cells.append("–")
            elif row["status"] == "ok":
                seconds = row["seconds"]
                time = f"{seconds:.3f} s" if seconds >= 0.1 else f"{seconds * 1e3:.2f} ms"
                cells.append(f"{time}, {row['peak_extra_mib']:,.0f} MiB")
            else:
                cells.append(row["status"])
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    largest = ", ".join(f"{impl}: {n:,}" if n else f"{impl}: none" for impl, n in data["largest_n"].items())
    lines.append(f"\nLargest N under the {data['cap_gib']:g} GiB cap: {largest}. Machine: {data['machine']}, "
                 f"{data['threads']} threads, D={data['d']}, {data['dtype']} inputs, "
                 f"{data.get('precision', 'fp32')}, chunk {data['chunk']} rows.")  # fmt: skip
    if data.get("device") == "cuda":
        sweep = data["chunk_sweep"]
        tiles = ", ".join(
            f"{k}: {'–' if s is None else f'{s * 1e3:.1f} ms'}" for k, s in sweep["seconds_by_chunk"].items()
        )
        lines.append(f"Tile rows at N={sweep['n']:,}: {tiles} (chosen {sweep['chosen']}, "
                     f"at most {data['tile_mib']:g} MiB a tile).")  # fmt: skip
    return "\n".join(lines)


def train_line(path: Path) -> str:
    data = json.loads(path.read_text())
    return (f"Training ({data['device']}, {data['precision']}): bare {data['bare_samples_per_s']:,} samples/s, "
            f"service {data['service_samples_per_s']:,}, ratio {data['ratio']} (bare by round {data['bare_per_round']}, "
            f"service {data['service_per_round']}); start-up {data['startup_latency_s']} s; {data['job_status']}. "
            f"Machine: {data['machine']}.")  # fmt: skip


def text_lr_table(path: Path) -> str:
    """bench/text_lr.py: held-out k-NN and probe accuracy of the fine-tuned text model at each learning rate."""
    data = json.loads(path.read_text())
    base = data["untrained"]
    lines = ["| lr | epoch | k-NN top-1 | linear probe | alignment | uniformity |", "|---|---|---|---|---|---|",
             f"| untrained | - | {base['knn_top1']} | {base['linear_probe_top1']} | - | - |"]  # fmt: skip
    for run in data["runs"]:
        default = " (default)" if run["lr"] == data["default_lr"] else ""
        for e in run["evals"]:
            lines.append(f"| {run['lr']:g}{default} | {e['epoch']} | {e['knn_top1']} | {e['linear_probe_top1']} | "
                         f"{e['alignment']} | {e['uniformity']} |")  # fmt: skip
    lines.append(f"\n{data['texts']} docstrings of {data['modules']} modules (Python {data['python']}), "
                 f"{data['backbone']}, batch {data['batch']}. Machine: {data['machine']}.")  # fmt: skip
    return "\n".join(lines)


def photos_table(path: Path) -> str:
    """bench/photos.py: a job on 384x512 images against the same images shrunk beforehand."""
    data = json.loads(path.read_text())
    lines = [
        "| images | steps | wall s | samples/s | peak MB above start | k-NN top-1 by epoch |",
        "|---|---|---|---|---|---|",
    ]
    for run in data["runs"]:
        shape = "x".join(str(side) for side in run["image_shape"][1:])
        knn = ", ".join(str(value) for value in run["knn_top1_by_epoch"])
        lines.append(f"| {run['variant']} ({shape}) | {run['steps']} | {run['wall_s']} | {run['samples_per_s_median']} | "
                     f"{run['peak_mb_above_start']} | {knn} |")  # fmt: skip
    lines.append(f"\nMachine: {data['machine']}.")
    return "\n".join(lines)


def api_line(path: Path) -> str:
    """One run of bench/api.py: the status polls and submissions under its clients, against the goal.

    Runs since the answers were timed one by one (``measured``) show those figures and wrk's, which carry its
    coordinated-omission correction (bench/api.py), and the goal on each; earlier runs have wrk's only."""
    data = json.loads(path.read_text())
    polls, submissions = data["status_polls"], data["submissions"]
    measured = polls.get("measured")

    def met(p99_ms: float) -> str:
        return "met" if polls["requests_per_s"] >= 1000 and p99_ms < 100 and polls["errors"] == 0 else "not met"

    if measured:
        latency = (f"as measured p50 {measured['p50_ms']:.1f} ms, p99 {measured['p99_ms']:.1f} ms, p99.9 "
                   f"{measured['p99_9_ms']:.1f} ms, max {measured['max_ms']:.1f} ms, over 0.1 / 0.25 / 0.5 / 1 / "
                   f"2.5 s: {measured['over_0.1_s']} / {measured['over_0.25_s']} / {measured['over_0.5_s']} / "
                   f"{measured['over_1.0_s']} / {measured['over_2.5_s']}; wrk's, corrected, p99 "
                   f"{polls['p99_ms']:.1f} ms, p99.9 {polls['p99_9_ms']:.1f} ms")  # fmt: skip
        goal = f"goal {met(measured['p99_ms'])} as measured, {met(polls['p99_ms'])} on wrk's corrected p99"
    else:
        latency = f"p50 {polls['p50_ms']:.1f} ms, p99 {polls['p99_ms']:.1f} ms"
        if polls.get("wakeups"):  # runs before the tail was recorded have neither it nor the watcher
            latency += f", p99.9 {polls['p99_9_ms']:.1f} ms, max {polls['max_ms']:.1f} ms"
        goal = f"goal {met(polls['p99_ms'])}"
    wakeups = polls.get("wakeups")
    if wakeups:
        machine = polls["machine"]
        latency += (f" (latest wake-up of a 5 ms sleep {wakeups['worst_ms']} ms; cores busy {machine['busy_cores']}, "
                    f"I/O wait {machine['iowait_cores']}, stolen {machine['steal_cores']})")  # fmt: skip
    if "server_side" in polls:
        timed = polls["server_side"]
        latency += (f", of the polls the app timed over 0.25 / 0.5 / 1 / 2.5 s: {timed['over_0.25_s']} / "
                    f"{timed['over_0.5_s']} / {timed['over_1.0_s']} / {timed['over_2.5_s']}")  # fmt: skip
    split = polls.get("connections_per_api_process")
    return (f"API ({data['api_processes']} processes, {data['clients']} clients): status polls "
            f"{polls['requests_per_s']:,}/s, {latency}, {polls['errors']} errors ({goal}"
            + (f"; connections per process {split}" if split else "")
            + f"); submissions {submissions['requests_per_s']:,}/s, p99 {submissions['p99_ms']:.0f} ms, "
            f"{submissions['errors']} errors; database connections at the end {data['db_connections_at_end']} "
            f"({data['db_pool_limit']}). Machine: {data['machine']}"
            + {True: "; kernel autogroup on.", False: "; kernel autogroup off.", None: "."}[
                data.get("kernel_autogroup")])  # fmt: skip


def _cores(server: dict, machine: dict | None) -> str | None:
    """Where a level's cores went (results written before bench/serve.py read the machine's have none)."""
    if machine is None:
        return None
    wrk = "–" if machine["generator_cores"] is None else machine["generator_cores"]
    return f"{server['process_cores']} / {wrk} / {machine['idle_cores']} / {machine['steal_cores']}"


def serve_table(path: Path = RESULTS / "serve.json") -> str:
    data = json.loads(path.read_text())
    lines = ["| model | clients | requests/s | embeddings/s | p50 ms | p95 ms | p99 ms | fraction of raw limit "
             "(rounds) | batching ceiling | inputs per pass | event loop ms per request | cores: server / wrk / idle / "
             "stolen |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for modality, model in data["models"].items():
        for lv in model["levels"]:
            server = lv.get("server", {})
            extra = [lv.get("batching_ceiling"), server.get("inputs_per_pass"), server.get("event_loop_ms_per_request"),
                     _cores(server, lv.get("machine"))]  # fmt: skip
            rounds = ", ".join(str(r["fraction_of_raw_limit"]) for r in lv.get("rounds", []))
            fraction = f"{lv['fraction_of_raw_limit']}" + (f" ({rounds})" if len(lv.get("rounds", [])) > 1 else "")
            lines.append(f"| {modality} | {lv['clients']} | {lv['requests_per_s']} | {lv['embeddings_per_s']} | "
                         f"{lv['p50_ms']:.1f} | {lv['p95_ms']:.1f} | {lv['p99_ms']:.1f} | {fraction} | "
                         + " | ".join("–" if x is None else str(x) for x in extra) + " |")  # fmt: skip
    for lv in data.get("peer_sentence_transformers", []):
        lines.append(f"| sentence-transformers peer (text) | {lv['clients']} | {lv['requests_per_s']} | "
                     f"{lv['embeddings_per_s']} | {lv['p50_ms']:.1f} | {lv['p95_ms']:.1f} | {lv['p99_ms']:.1f} | "
                     f"ours ÷ peer: {lv['ours_over_peer']} | | | | |")  # fmt: skip
    for modality, model in data["models"].items():
        raw = model["raw"]
        layouts = raw["by_layout_and_batch"]
        again = "; ".join(f"{k}: {', '.join(f'{r:,}' for r in v)}" for k, v in raw["measured_again"].items())
        rounds = model["latency_at_1_client"]["rounds"]
        lines.append(f"\nRaw limit, {modality}: {raw['best_embeddings_per_s']:,} embeddings/s ({raw['best']}, median of "
                     f"the rounds measured again: {again}); sweep by layout and batch: "
                     + ", ".join(f"{k} {v['embeddings_per_s']:,}" for k, v in layouts.items())
                     + ". p50 at 1 client minus one raw forward pass of one input, by round: "
                     + ", ".join(f"{r['p50_ms']:.2f} - {min(r['raw_ms_by_threads'].values()):.2f}" for r in rounds)
                     + f"; median {model['p50_at_1_client_minus_raw_ms']} ms.")  # fmt: skip
    timed_by = {lv.get("latency_timed_by", "wrk (corrected)") for m in data["models"].values() for lv in m["levels"]
                if lv.get("generator") == "wrk"}  # fmt: skip
    lines.append(
        f"\nMachine: {data['machine']}; precision {data.get('precision', 'fp32')}; "
        f"API processes {data.get('api_processes', 1)}"  # runs before the option had one
        + (f"; latencies as timed by {' and '.join(sorted(timed_by))}." if timed_by else ".")
    )
    return "\n".join(lines)


def _added(path: Path) -> str:
    """When git first saw ``path`` (ISO time; "~" for a file not committed yet, which sorts last)."""
    out = subprocess.run(["git", "log", "--diff-filter=A", "--format=%cI", "--", path.name], cwd=path.parent,
                         capture_output=True, text=True).stdout.split()  # fmt: skip
    return out[-1] if out else "~"


def serving_across(folder: Path, clients: int = 32) -> str:
    """One row per serving run under ``folder`` (the text model at ``clients`` clients), oldest first, and the counts
    the README quotes, by precision: the rounds (each paired with a raw measure) under 0.8 of the raw limit, the runs
    that met the goal at 32 and at 128 clients, those whose estimate (below) came within 0.05 of the measure, and
    those whose one-client p50 came within 2 ms of a raw pass.

    The estimate is the rule bench/RESULTS.md reads each run by: passes as large as the level allows run at the
    batching ceiling's fraction of the best rate, on the cores the server holds less its event loops' share:
    ceiling x (server cores - event-loop cores) / machine cores.
    """
    runs = sorted(folder.rglob("serve*.json"), key=lambda f: (_added(f), str(f)))
    lines = [f"| run | machine | precision | API processes | raw limit /s | at {clients}: fraction (rounds) | batching "
             "ceiling | event loop: cores, ms a request | server cores | estimate | at 128 | 1 client: p50 over a raw "
             "pass |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    rounds_by: dict[str, list[float]] = {}
    medians_by: dict[str, list[float]] = {}  # each run's fraction: its median round
    many_by: dict[str, list[float]] = {}  # each run's at 128 clients
    misses_by: dict[str, list[float]] = {}  # each run's fraction less its estimate
    p50_by: dict[str, list[float]] = {}
    for run in runs:
        data = json.loads(run.read_text())
        text, precision = data["models"]["text"], data.get("precision", "fp32")
        levels = {lv["clients"]: lv for lv in text["levels"]}
        level = levels.get(clients)
        if level is None:
            continue
        rounds = [r["fraction_of_raw_limit"] for r in level.get("rounds", [])]
        rounds_by.setdefault(precision, []).extend(rounds)
        medians_by.setdefault(precision, []).append(level["fraction_of_raw_limit"])
        if 128 in levels:
            many_by.setdefault(precision, []).append(levels[128]["fraction_of_raw_limit"])
        if 1 in levels:
            p50_by.setdefault(precision, []).append(text["p50_at_1_client_minus_raw_ms"])
        server, ceiling = level.get("server", {}), level.get("batching_ceiling")
        machine_cores = int(data["machine"].split(" cores")[0].rsplit(" ", 1)[-1])
        loop = server.get("event_loop_cores")
        estimate = (None if None in (ceiling, loop, server.get("process_cores"))
                    else round(ceiling * (server["process_cores"] - loop) / machine_cores, 3))  # fmt: skip
        cpu = re.sub(r";[^)]*", "", data["machine"].split(", ")[0].removeprefix("vm "))  # without its flags
        if estimate is not None:
            misses_by.setdefault(precision, []).append(level["fraction_of_raw_limit"] - estimate)
        cells = [str(run.relative_to(folder)), cpu.replace("Intel(R) Xeon(R) Processor", "Intel Xeon"), precision,
                 data.get("api_processes", 1), f"{text['raw']['best_embeddings_per_s']:,}",
                 f"{level['fraction_of_raw_limit']} ({', '.join(map(str, rounds))})", ceiling,
                 f"{loop}, {server.get('event_loop_ms_per_request')}", server.get("process_cores"), estimate,
                 levels.get(128, {}).get("fraction_of_raw_limit"),
                 f"+{text['p50_at_1_client_minus_raw_ms']} ms" if 1 in levels else None]  # fmt: skip
        lines.append("| " + " | ".join("–" if c is None else str(c) for c in cells) + " |")
    lines.append(f"\n{len(runs)} runs.")
    for precision, fractions in rounds_by.items():
        medians, many, p50s = medians_by[precision], many_by.get(precision, []), p50_by.get(precision, [])
        misses = misses_by.get(precision, [])
        lines.append(f"{precision}: at {clients} clients {len(fractions)} rounds, {sum(f < 0.8 for f in fractions)} under "
                     f"0.8 of the raw limit (median {statistics.median(fractions):.3f}, {min(fractions)}-{max(fractions)});"
                     f" the run's median round at 0.8 or more in {sum(f >= 0.8 for f in medians)} of {len(medians)} runs;"
                     f" at 128 clients in {sum(f >= 0.8 for f in many)} of {len(many)}; the estimate within 0.05 of the"
                     f" fraction in {sum(abs(m) <= 0.05 for m in misses)} of {len(misses)} runs; one client's p50 within"
                     f" 2 ms of a raw pass in {sum(p <= 2 for p in p50s)} of {len(p50s)} runs.")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serving-across":
        print(serving_across(Path(sys.argv[2])))
    elif len(sys.argv) > 1:
        folder = Path(sys.argv[1])
        for found in sorted(folder.glob("loss*.json")):
            print(f"{found.name}\n{loss_table(found)}\n")
        for found in sorted(folder.glob("train*.json")):
            print(train_line(found))
        for found in sorted(folder.glob("api*.json")):
            print(f"{found.name}: {api_line(found)}")
        for found in sorted(folder.glob("serve*.json")):
            print(f"\n{found.name}\n{serve_table(found)}")
        for found in sorted(folder.glob("text-lr*.json")):
            print(f"\n{found.name}\n{text_lr_table(found)}")
        for found in sorted(folder.glob("photos*.json")):
            print(f"\n{found.name}\n{photos_table(found)}")
    else:
        print(loss_table())
        print()
        print(serve_table())
        print()
        print(api_line(RESULTS / "api.json"))
