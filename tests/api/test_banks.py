"""Neighbour banks are built once per key, however many requests ask for one at the same time."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.models.banks import Banks


def test_requests_arriving_together_share_one_build() -> None:
    banks: Banks[object] = Banks(size=4)
    builds: list[str] = []
    started = threading.Barrier(8)

    def build() -> object:
        builds.append(threading.current_thread().name)
        time.sleep(0.2)  # long enough for every other request to arrive while it builds
        return object()

    def ask(_: int) -> object:
        started.wait()
        return banks.get(("version", "fp32"), build)

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, range(8)))
    assert len(builds) == 1 and all(entry is got[0] for entry in got)
    assert banks.get(("version", "bf16"), object) is not got[0]  # another key, another bank


def test_a_failed_build_is_tried_again_and_the_size_is_held() -> None:
    banks: Banks[int] = Banks(size=2)

    def broken() -> int:
        raise OSError("dataset missing")

    with pytest.raises(OSError):
        banks.get("a", broken)
    assert banks.get("a", lambda: 1) == 1 and not banks.building
    banks.get("b", lambda: 2)
    assert banks.get("c", lambda: 3) == 3 and list(banks.entries) == ["c"]  # a third key drops the two held
