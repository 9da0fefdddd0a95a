"""The machine a benchmark ran on, in words: results from different machines must not be compared unawares."""

from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path

# Flags that decide what the CPU's matrix products run on: VMs under one model name differ in them
MATRIX_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_model() -> str:
    """The CPU's model name, family and model numbers and matrix flags (from /proc/cpuinfo on Linux), e.g.
    ``AMD EPYC (family 25 model 17; avx2 avx512f avx512_bf16)``, else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text().splitlines():
        if not line.strip():
            break  # the first processor's block says it for all
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = " ".join(flag for flag in MATRIX_FLAGS if flag in fields.get("flags", "").split()) or "no AVX2"
    family, model = fields.get("cpu family", "?"), fields.get("model", "?")
    return f"{fields.get('model name', platform.machine())} (family {family} model {model}; {flags})"


def describe(accelerator: str = "no GPU") -> str:
    """Host name, CPU model, core count and accelerator, e.g. ``vm AMD EPYC (family 25 model 17;
    avx2 avx512f avx512_bf16), 2 cores, no GPU``."""
    return f"{platform.node()} {cpu_model()}, {os.cpu_count()} cores, {accelerator}"


def kernel_autogroup() -> bool | None:
    """Whether the kernel schedules each session's processes as one group (``sched_autogroup_enabled``, on in
    Debian's kernels): the groups then share the cores evenly, whatever each one's processes need. On the 2-core VM
    the API processes and wrk (the benchmark's session) kept both cores busy while a PostgreSQL backend (the
    server's session) waited runnable for a core for up to 1.4 s, which held the status poll waiting on it: the
    polls' rare tail (bench/RESULTS.md, "The first Zen 2 VM"). None where the kernel has no such setting."""
    setting = Path("/proc/sys/kernel/sched_autogroup_enabled")
    return setting.read_text().strip() == "1" if setting.exists() else None


def machine_ticks() -> dict[str, int]:
    """The whole machine's CPU time so far, in clock ticks, from the first line of /proc/stat: ``busy`` (user,
    nice, system, interrupts), ``idle`` (idle and I/O wait), ``iowait`` (the part of idle with I/O outstanding)
    and ``steal`` (taken by the hypervisor)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return {"busy": user + nice + system + irq + softirq, "idle": idle + iowait, "iowait": iowait, "steal": steal}


class WakeUps:
    """How late a thread that sleeps ``interval_s`` at a time wakes, while the ``with`` block runs.

    A stall of the whole VM (the hypervisor not running it, the kernel busy) delays this thread's wake-up by as
    long as the stall; a stall inside one of the service's processes (a lock, a full pool, a collection) does not.
    A wake-up contends for the cores with whatever runs beside it, so a few milliseconds late is the load's doing.
    """

    def __init__(self, interval_s: float = 0.005, late_s: float = 0.05) -> None:
        self.interval_s, self.late_s = interval_s, late_s
        self.worst_s, self.late, self.wakeups = 0.0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="wakeups", daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            time.sleep(self.interval_s)
            overrun = time.monotonic() - began - self.interval_s
            self.worst_s = max(self.worst_s, overrun)
            self.late += overrun > self.late_s
            self.wakeups += 1

    def __enter__(self) -> WakeUps:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float | int]:
        return {"wakeups": self.wakeups, "worst_ms": round(self.worst_s * 1000, 1),
                f"later_than_{round(self.late_s * 1000)}_ms": self.late}  # fmt: skip
