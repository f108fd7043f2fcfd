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


def bf16_params_supported(device: torch.device) -> bool:
    """Whether FSDP may hold the gathered weights in bf16 (`MixedPrecisionPolicy`): on CUDA with
    bf16 support. The CPU keeps fp32 weights and computes under bf16 autocast instead."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for `peak_memory_mib`: the process's resident set (Linux: writing 5 to
    /proc/self/clear_refs resets VmHWM) and, on CUDA, the allocator's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: the peak then covers the process's whole life
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mib(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process since `reset_peak_memory`, in MiB; on CUDA also the
    peak of memory allocated by torch (`peak_gpu_mib`)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    try:
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        pass
    out = {"peak_rss_mib": round(peak, 1)}
    if device.type == "cuda":
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
