"""Process-wide memory settings for Landun's long-running processes, applied when the `landun`
package is imported: before numpy loads and before any thread starts, or they would not take.

- numpy advises the kernel to back every array over 4 MiB with 2 MiB pages. The detector banks
  are such arrays, zero-filled and written a row at a time, so huge pages make them resident long
  before their rows fill.
- glibc gives threads that allocate at the same time arenas of their own (up to 8 per core), and
  memory freed in one is not reused by another. Ingest's network, worker and deliverer threads
  allocate all the time, so the arenas grow apart and the process's peak memory with them.
The measured effect of both settings is in the README (Benchmarks, "Memory settings").
An explicit NUMPY_MADVISE_HUGEPAGE or MALLOC_ARENA_MAX in the environment wins."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MALLOC_ARENAS = 1
M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's <malloc.h>


def apply() -> None:
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    if "MALLOC_ARENA_MAX" not in os.environ:
        cap_malloc_arenas(MALLOC_ARENAS)


def cap_malloc_arenas(arenas: int) -> bool:
    """glibc's mallopt(M_ARENA_MAX); False where there is no glibc (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
