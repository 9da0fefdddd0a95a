"""core.allocator: glibc keeps the memory a step frees, so that the next step does not fault it back in."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from core.allocator import keep_freed_memory

# A training step's pattern in a fresh process: large buffers allocated and written, then all freed. glibc's
# mallinfo2() tells where they lived (hblkhd: bytes in their own mmaps, given back on free) and what the heap
# kept once they were freed (fordblks: free bytes held for the next step).
STEP = textwrap.dedent(
    """
    import ctypes, sys
    import torch
    torch.set_num_threads(1)
    from core.allocator import keep_freed_memory
    tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    buffers = [torch.empty(2 << 20).fill_(1.0) for _ in range(20)]  # 20 x 8 MiB
    mapped_mib = libc.mallinfo2().hblkhd >> 20
    del buffers
    print(tuned, mapped_mib, libc.mallinfo2().fordblks >> 20)
    """
)


def _step(mode: str) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", STEP, mode], capture_output=True, text=True, check=True).stdout
    tuned, mapped_mib, kept_mib = out.split()
    return tuned, int(mapped_mib), int(kept_mib)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_large_buffers_live_in_the_heap_and_are_kept_when_freed() -> None:
    default, tuned = _step("default"), _step("tuned")
    # glibc's defaults: each buffer in its own mmap, given back to the kernel when freed (and faulted in afresh)
    assert default[0] == "False" and default[1] >= 160 and default[2] < 16, default
    # kept: the buffers come from the heap, and the heap holds on to them for the next step
    assert tuned[0] == "True" and tuned[1] < 16 and tuned[2] >= 160, tuned


def test_an_allocator_setting_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
