"""The devices `fit` knows: GPUs by their memory, Apple unified memory, this host's RAM.

Usable memory is less than the label: a CUDA context and the driver take
about half a GiB of a GPU before any model loads, and macOS lets the GPU wire
about three quarters of unified memory by default (its
`recommendedMaxWorkingSetSize`). This host's budget is the RAM available now.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from scheda.errors import UsageError

GiB = 1 << 30
CUDA_RESERVE = GiB // 2
APPLE_GPU_SHARE = 0.75


@dataclass(frozen=True)
class Device:
    key: str
    name: str
    memory: int  # bytes on the label
    usable: int  # bytes a model may use

    @property
    def label(self) -> str:
        if "GB" in self.name:
            return self.name
        return f"{self.name} ({self.memory / GiB:.0f} GB)"


def _gpu(key: str, name: str, gib: int) -> Device:
    return Device(key, name, gib * GiB, gib * GiB - CUDA_RESERVE)


def _apple(gib: int) -> Device:
    return Device(
        f"apple-{gib}", f"Apple {gib} GB unified", gib * GiB, int(gib * GiB * APPLE_GPU_SHARE)
    )


GPUS: tuple[Device, ...] = (
    _gpu("t4", "NVIDIA T4", 16),
    _gpu("l4", "NVIDIA L4", 24),
    _gpu("rtx-3090", "RTX 3090", 24),
    _gpu("rtx-4090", "RTX 4090", 24),
    _gpu("a100-40", "A100 40GB", 40),
    _gpu("a100-80", "A100 80GB", 80),
    _gpu("h100", "H100 80GB", 80),
    *(_apple(g) for g in (8, 16, 24, 32, 64, 96, 128, 192)),
)


def host() -> Device:
    """This machine's RAM: the total on the label, what is available now as the budget."""
    total, available = _memory()
    return Device("host", "this host's RAM", total, available)


def _memory() -> tuple[int, int]:
    """(total, available) bytes of RAM. On Linux from /proc/meminfo, where psutil reads
    them too, without importing psutil: its import is a tenth of `scheda fit`'s start-up."""
    try:
        with open("/proc/meminfo", "rb") as f:
            info = dict(line.split(b":", 1) for line in f if b":" in line)
        kib = [int(info[key].split()[0]) for key in (b"MemTotal", b"MemAvailable")]
        return kib[0] * 1024, kib[1] * 1024
    except (OSError, KeyError, ValueError, IndexError):  # not Linux, or an old kernel
        import psutil

        memory = psutil.virtual_memory()
        return memory.total, memory.available


def physical_cores() -> int:
    """Threads for CPU kernels: llama.cpp and PyTorch both run fastest with one per
    physical core (hyper-threads share a core's vector units), and no more than the CPUs
    this process may run on (`taskset`, a container's cpuset): more threads than CPUs
    make llama.cpp's threads wait for each other's turn at every step."""
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    return max(cores, 1)


def custom(gb: float) -> Device:
    if not gb > 0:
        raise UsageError(f"--memory must be a positive number of GB, got {gb}")
    return Device("custom", f"{gb:g} GB of memory", int(gb * GiB), int(gb * GiB))


def _key(text: str) -> str:
    return text.lower().replace(" ", "").replace("-", "").replace("_", "").replace("nvidia", "")


def find(name: str) -> list[Device]:
    """Devices a --gpu name means: `t4`, `4090`, `a100` (both sizes), `apple-32`, `host`."""
    key = _key(name)
    if key in ("host", "cpu", "ram"):
        return [host()]
    exact = [d for d in GPUS if _key(d.key) == key or _key(d.key) == "rtx" + key]
    if exact:
        return exact
    prefix = [d for d in GPUS if _key(d.key).startswith(key)]
    if prefix:
        return prefix
    known = ", ".join(d.key for d in GPUS)
    raise UsageError(f"unknown GPU {name!r}: known are {known}, host; or give --memory GB")


def all_devices() -> list[Device]:
    return [*GPUS, host()]
