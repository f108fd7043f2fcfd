"""The process's long-lived heap: frozen out of the garbage collector's full passes, and freed
memory kept for reuse instead of handed back to the kernel.

A driver or worker that has imported torch, transformers and Ray and loaded its model holds
~500k tracked objects for its whole life, and every full collection walked them all: 0.3 s at
an arbitrary point of whatever stage was running (measured in `make bench`'s driver: the policy
figures of one loop run in three took 0.45 s instead of 0.15 s). `settle_heap` is called once a
process has loaded what it keeps; a full collection then walks only the objects made since.

Generation and training free and allocate the same tensors step after step (the KV cache grows
by a copy each token). glibc's defaults return such memory to the kernel (`munmap`, heap
trimming) and fault it back in page by page, zeroed: 3-6k page faults per chunk of the demo's
generate (8 prompts x 4 samples), 55-70k in a rollout worker's generate stage of ~1.1 s.
`keep_freed_memory` fixes the mmap threshold and raises the trim threshold (glibc's `mallopt`,
the same knobs as the `MALLOC_*_` environment variables), so freed blocks stay in the heap:
after its first chunks a process faults ~10 pages per chunk. The price is resident memory: up
to `TRIM_MIB` of freed heap stays with the process. `SELFTRAIN_KEEP_FREED_MEMORY=0` leaves
glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
MMAP_MIB = 32  # the largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_MIB = 256
TOP_PAD_MIB = 16

_malloc: str | None = None  # what keep_freed_memory did in this process


def keep_freed_memory() -> str:
    """Tune glibc's malloc once per process; returns what holds: "kept" (tuned), "default"
    (turned off by the environment) or why it could not ("not glibc")."""
    global _malloc
    if _malloc is not None:
        return _malloc
    if os.environ.get("SELFTRAIN_KEEP_FREED_MEMORY", "1") == "0":
        _malloc = "default"
        return _malloc
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _malloc = "not glibc"
        return _malloc
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = [mallopt(M_MMAP_THRESHOLD, MMAP_MIB << 20), mallopt(M_TRIM_THRESHOLD, TRIM_MIB << 20),
            mallopt(M_TOP_PAD, TOP_PAD_MIB << 20)]
    _malloc = "kept" if all(done) else "mallopt refused"
    return _malloc


def settle_heap() -> None:
    """Collect once, then freeze what survives (`gc.freeze`); keep freed memory from here on.
    Garbage among the frozen objects is never freed; there is little, since the collection ran
    just before."""
    keep_freed_memory()
    gc.collect()
    gc.freeze()


def heap_info() -> dict[str, object]:
    """What a process reports of its heap (`info()` of workers and ranks, the benchmark)."""
    return {"frozen_objects": gc.get_freeze_count(), "malloc": _malloc or "default"}
