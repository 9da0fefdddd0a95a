"""Print the README's benchmark tables from the JSON the benchmarks wrote: ``python bench/report.py``."""

from __future__ import annotations

import json
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
                cells.append(f"{row['seconds']:.3f} s, {row['peak_extra_mib']:,.0f} MiB")
            else:
                cells.append(row["status"])
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    largest = ", ".join(f"{impl}: {n:,}" if n else f"{impl}: none" for impl, n in data["largest_n"].items())
    lines.append(f"\nLargest N under the {data['cap_gib']:g} GiB cap: {largest}. Machine: {data['machine']}, "
                 f"{data['threads']} threads, D={data['d']}, {data['dtype']}, chunk {data['chunk']} rows.")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    print(loss_table())
