"""Every device decision lives here: which device, which dtype, how many CPU threads.

Keeping `.cuda()`-style calls out of the rest of the code base is what lets the same worker
classes run on a laptop CPU, a Ray CPU cluster and a GPU node unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def best_device() -> torch.device:
    """CUDA when visible (Ray sets CUDA_VISIBLE_DEVICES for GPU actors), else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def dtype_of(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def configure_threads(num_cpus: float | None) -> None:
    """Pin torch's intra-op threads to the CPUs Ray granted, so co-located actors don't thrash."""
    if num_cpus is None or num_cpus <= 0:
        return
    n = max(1, int(num_cpus))
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


@contextmanager
def single_cpu_thread(device: torch.device | None = None) -> Iterator[None]:
    """Tiny-model work on the CPU in one torch thread: matrices this small gain little from two,
    and on a busy machine OpenMP's spinning threads made SFT up to 50x slower (measured)."""
    if device is not None and device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def require_cuda() -> torch.device:
    """For the GPU check: fail loudly instead of silently falling back to the CPU."""
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available: torch.cuda.is_available() is False")
    return torch.device("cuda")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
