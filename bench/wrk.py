"""wrk, the C load generator bench/serve.py and bench/api.py drive the service with, and its answers timed one by one.

wrk reports its latencies after its coordinated-omission correction (wrk.c's stats_correct): each answer slower than
twice a connection's mean interval between requests adds samples at its latency less one, two, ... intervals, as if
the requests that connection did not send meanwhile had waited too. One poll held 3.3 s among 23,500 took wrk's p99
from 43 ms to 137 ms. So the script also times each answer itself: it sends its clock in X-Request-ID, which the
service echoes, and counts each answer's microseconds (LuaJIT's FFI, CLOCK_MONOTONIC). :func:`run` returns both.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from collections.abc import Callable

# appended to a script that sets wrk.method, wrk.body and wrk.headers; it defines request, response, setup and done
MEASURE = """local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]]
local clock = ffi.new("bench_timespec")
local function micros()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1000000 + math.floor(tonumber(clock.tv_nsec) / 1000)
end
measured = {}
request = function()
  wrk.headers["X-Request-ID"] = string.format("bench-%d", micros())
  return wrk.format()
end
response = function(status, headers, body)
  local sent = headers["x-request-id"] or headers["X-Request-ID"]
  if sent and string.sub(sent, 1, 6) == "bench-" then
    local us = micros() - tonumber(string.sub(sent, 7))
    measured[us] = (measured[us] or 0) + 1
  end
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %d, \\"errors\\": %d, \\"p50\\": %d, \\"p95\\": %d, \\"p99\\": %d, "
    .. "\\"p999\\": %d, \\"max\\": %d, \\"us\\": %d}\\n", summary.requests, summary.errors.status
    + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency:percentile(99.9), latency.max,
    summary.duration))
  local pairs_seen = {}
  for _, thread in ipairs(threads) do
    for us, count in pairs(thread:get("measured")) do
      pairs_seen[#pairs_seen + 1] = string.format("[%d,%d]", us, count)
    end
  end
  io.write("MEASURED [" .. table.concat(pairs_seen, ",") .. "]\\n")
end
"""
MEASURED_OVER_S = (0.1, 0.25, 0.5, 1.0, 2.5)


def measured_latency(histogram: list[list[int]]) -> dict:
    """Percentiles and counts over :data:`MEASURED_OVER_S` of answers timed one by one (``[microseconds, count]``
    pairs, a value may repeat), with no correction."""
    counts: dict[int, int] = {}
    for micros, count in histogram:
        counts[micros] = counts.get(micros, 0) + count
    values, total = sorted(counts), sum(counts.values())
    if not total:
        return {"answers": 0}

    def percentile(q: float) -> float:
        rank, seen = max(1, math.ceil(q * total)), 0
        for value in values:
            seen += counts[value]
            if seen >= rank:
                return value / 1000
        return values[-1] / 1000

    over = {f"over_{bound}_s": sum(n for v, n in counts.items() if v > bound * 1e6) for bound in MEASURED_OVER_S}
    return {"answers": total, "p50_ms": percentile(0.5), "p95_ms": percentile(0.95), "p99_ms": percentile(0.99),
            "p99_9_ms": percentile(0.999), "max_ms": values[-1] / 1000, **over}  # fmt: skip


def run(url: str, script: str, clients: int, threads: int, seconds: int, timeout_s: int,
        meanwhile: Callable[[], None] | None = None) -> dict:  # fmt: skip
    """One wrk run of ``script`` (without request/response/done functions: :data:`MEASURE` adds them) and, while it
    runs, ``meanwhile()``. Its requests, errors and requests/s, wrk's latencies (``wrk``: corrected) and the answers
    as the script timed them (``measured``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script + "\n" + MEASURE)
    proc = subprocess.Popen(["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds}s", "--timeout", f"{timeout_s}s",
                             "-s", handle.name, url], stdout=subprocess.PIPE, text=True)  # fmt: skip
    if meanwhile is not None:
        meanwhile()
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"wrk exited with {proc.returncode}")
    lines = out.splitlines()
    stats = json.loads(next(line for line in lines if line.startswith("JSON "))[5:])
    histogram = json.loads(next(line for line in lines if line.startswith("MEASURED "))[9:])
    return {"requests": stats["requests"], "errors": stats["errors"],
            "requests_per_s": round(stats["requests"] / (stats["us"] / 1e6), 1),
            "wrk": {"p50_ms": stats["p50"] / 1000, "p95_ms": stats["p95"] / 1000, "p99_ms": stats["p99"] / 1000,
                    "p99_9_ms": stats["p999"] / 1000, "max_ms": stats["max"] / 1000},
            "measured": measured_latency(histogram)}  # fmt: skip
