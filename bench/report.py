"""Print the README's benchmark tables from the JSON the benchmarks wrote.

python bench/report.py                     # bench/results: the CPU loss and serving tables, the API run
python bench/report.py bench/results/gpu   # a folder of bench/gpu.sh: its loss tables and training figures
python bench/report.py bench/results/xeon-amx   # any folder of loss*.json / train*.json / serve*.json / api*.json
                                                # / text-lr*.json
"""

from __future__ import annotations

import json
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
    lines.append(
        f"\nMachine: {data['machine']}; precision {data.get('precision', 'fp32')}; "
        f"API processes {data.get('api_processes', 1)}."
    )  # runs before the option had one
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1:
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
    else:
        print(loss_table())
        print()
        print(serve_table())
        print()
        print(api_line(RESULTS / "api.json"))
