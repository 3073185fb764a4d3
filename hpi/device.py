"""Devices: parsing PaddleX device strings and describing the hardware for cache keys."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import re
from dataclasses import dataclass
from typing import Literal

from hpi.errors import BackendUnavailableError, InvalidConfigError

logger = logging.getLogger(__name__)

_DEVICE_RE = re.compile(r"^(cpu|gpu)(?::(\d+))?$")


@dataclass(frozen=True)
class Device:
    """Where a model runs: ``cpu`` or ``gpu:N``."""

    kind: Literal["cpu", "gpu"]
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"


def parse_device(device: str | Device | None) -> Device:
    """Parse a PaddleX device string.

    ``None`` resolves to ``gpu:0`` when a CUDA device is visible, else ``cpu`` (PaddleX's rule), and the choice is
    logged. ``"gpu"`` means ``gpu:0``.

    Example:
        >>> parse_device("gpu:1")
        Device(kind='gpu', index=1)
    """
    if isinstance(device, Device):
        return device
    if device is None:
        resolved = Device("gpu", 0) if cuda_device_count() > 0 else Device("cpu")
        logger.info("device not given: using %s (pass device='cpu' or 'gpu:N' to choose)", resolved)
        return resolved
    match = _DEVICE_RE.match(str(device).strip().lower())
    if not match:
        raise InvalidConfigError(f"device {device!r} is not understood; expected 'cpu', 'gpu' or 'gpu:N'")
    kind, index = match.group(1), int(match.group(2) or 0)
    if kind == "cpu" and match.group(2) is not None and index != 0:
        raise InvalidConfigError(f"device {device!r}: there is only one cpu device; use 'cpu'")
    return Device(kind, index)  # type: ignore[arg-type]


def require_gpu(device: Device) -> None:
    """Raise :class:`BackendUnavailableError` unless ``device`` is a visible CUDA device."""
    count = cuda_device_count()
    if count == 0:
        raise BackendUnavailableError(f"device {device} requested but no CUDA device is visible")
    if device.index >= count:
        raise BackendUnavailableError(f"device {device} requested but only {count} CUDA device(s) are visible")


def cpu_count() -> int:
    """Cores this process may use (affinity-aware), never less than 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """The thread count for a CPU engine: the machine's cores unless given, and never more than them."""
    cores = cpu_count()
    if threads is None:
        return cores
    if threads < 1:
        raise InvalidConfigError(f"threads must be at least 1, got {threads}")
    if threads > cores:
        logger.warning("threads=%d exceeds the %d available cores; using %d", threads, cores, cores)
        return cores
    return threads


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, object]:
    """CPU model name and the instruction-set flags that change what engines compile to."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    relevant = sorted(f for f in flags if f.startswith(("avx", "amx", "sse4", "fma", "f16c", "vnni")))
    return {"model": model, "flags": relevant, "cores": cpu_count()}


def cpu_has_bf16() -> bool:
    """Whether the CPU has native bf16 (AVX512-BF16 or AMX), where reduced precision can pay."""
    flags = set(cpu_info()["flags"])  # type: ignore[arg-type]
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """Visible CUDA devices, asked through cuda-python; 0 when it or a driver is missing."""
    try:
        cudart = _cudart()
    except ImportError:
        return 0
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception:  # noqa: BLE001 - a broken driver install must read as "no device", not crash import
        return 0
    return int(count) if int(err) == 0 else 0


def _cudart():  # noqa: ANN202
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
    return cudart


def gpu_info(index: int) -> dict[str, object]:
    """Name and compute capability of CUDA device ``index`` (for cache keys)."""
    cudart = _cudart()

    err, props = cudart.cudaGetDeviceProperties(index)
    if int(err) != 0:
        raise BackendUnavailableError(f"cannot query CUDA device {index}: error {int(err)}")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}


def device_signature(device: Device) -> str:
    """A short, stable hash of the hardware an engine is built for (part of every cache key)."""
    # On CPU the instruction set decides what engines compile to; the core count does not.
    info = gpu_info(device.index) if device.is_gpu else {k: v for k, v in cpu_info().items() if k != "cores"}
    text = f"{device.kind}|{sorted(info.items())}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
