"""The C allocator tuned for torch's per-step tensors (glibc's malloc; elsewhere nothing changes).

torch's CPU tensors come from ``malloc``. glibc serves a block above a threshold (128 KiB, rising to at most
32 MiB as such blocks are freed) as a fresh ``mmap``, and gives memory at the top of its heap back to the kernel
once more than a trim threshold (twice the former) is free there. A training step frees its activations and its
(2N)^2 similarity matrices at the end and asks for them again at the next step; with the defaults their pages
come back from the kernel, zero-filled, every time. On the 2-core development VM (bench/train.py's bare loop,
batch 256, CPU) a step took 16,000-19,000 page faults and the loop ran at 2,340-2,400 samples/s; with
:func:`keep_freed_memory` 810 faults and 2,830 samples/s. The cost is memory: up to ``trim_threshold`` bytes of
freed heap stay with the process for its next step instead of going back to the system.

The processes that train or serve call it once at start (the worker, each training rank, the API);
benchmarks call it in every process they compare, so that allocator behaviour is the same on both sides.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3


def keep_freed_memory(trim_threshold: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Keep up to ``trim_threshold`` bytes of freed heap and serve blocks up to ``mmap_threshold`` from the heap.

    An allocator setting given in the environment (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``,
    ``GLIBC_TUNABLES``) wins: nothing is changed then.

    Returns:
        True if glibc took both settings; False where it was left alone (another C library, or the environment
        already says how).
    """
    if any(name in os.environ for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator behaves otherwise
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
