"""The machine a benchmark ran on, in words: results from different machines must not be compared unawares."""

from __future__ import annotations

import os
import platform
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
