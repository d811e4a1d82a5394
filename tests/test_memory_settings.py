"""Process-wide memory settings the `landun` package applies before numpy loads
(landun/memory.py), checked in fresh interpreters by their effect."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Threads that allocate at the same time, then glibc's own report of its arenas (on stderr).
ARENAS = """
import ctypes, ctypes.util, threading
import landun.cli
def churn():
    for _ in range(2000):
        [bytearray(200_000) for _ in range(4)]
threads = [threading.Thread(target=churn) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
ctypes.CDLL(ctypes.util.find_library("c")).malloc_stats()
"""
HUGE_PAGES = "import landun.cli, numpy; print(numpy._core.multiarray._get_madvise_hugepage())"


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NUMPY_MADVISE_HUGEPAGE", "MALLOC_ARENA_MAX")
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.parametrize(
    ("setting", "advised"), [({}, "False"), ({"NUMPY_MADVISE_HUGEPAGE": "1"}, "True")]
)
def test_numpy_huge_page_advice_is_off_unless_asked_for(setting: dict, advised: str) -> None:
    assert run(HUGE_PAGES, **setting).stdout.strip() == advised


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
@pytest.mark.parametrize(("setting", "arenas"), [({}, 1), ({"MALLOC_ARENA_MAX": "3"}, 3)])
def test_one_malloc_arena_unless_asked_for_more(setting: dict, arenas: int) -> None:
    assert run(ARENAS, **setting).stderr.count("Arena ") == arenas


GC_SETTLED = """
import gc
from landun import gc_settings
gc_settings.settle()
print(gc.get_threshold(), gc.get_freeze_count() > 1000)
"""


def test_gc_settle_freezes_what_is_loaded_and_enlarges_the_young_generation() -> None:
    """What `landun run` does once its modules are loaded (the effect on pauses and drain rate
    is measured by bench/ingest_throughput.py, see landun/gc_settings.py)."""
    assert run(GC_SETTLED).stdout.strip() == "(50000, 20, 20) True"
