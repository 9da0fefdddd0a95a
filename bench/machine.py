"""The machine a benchmark ran on, in words: results from different machines must not be compared unawares."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe(accelerator: str = "no GPU") -> str:
    """Host name, CPU model, core count and accelerator, e.g. ``vm Intel(R) Xeon(R) Processor, 2 cores, no GPU``."""
    return f"{platform.node()} {cpu_model()}, {os.cpu_count()} cores, {accelerator}"
