"""Devices: parsing PaddleX device strings, thread counts, and a device's signature for cache keys.

The hardware itself is described by :mod:`hpi.cpu` (cores, flags, the ISA cap) and :mod:`hpi.gpu` (CUDA devices);
which precisions it runs natively is :mod:`hpi.precision`'s policy.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Literal

from hpi import cpu, gpu
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
        resolved = Device("gpu", 0) if gpu.cuda_device_count() > 0 else Device("cpu")
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
    count = gpu.cuda_device_count()
    if count == 0:
        raise BackendUnavailableError(f"device {device} requested but no CUDA device is visible")
    if device.index >= count:
        raise BackendUnavailableError(f"device {device} requested but only {count} CUDA device(s) are visible")


def resolve_threads(threads: int | None) -> int:
    """The thread count for a CPU engine: the machine's cores unless given, and never more than them."""
    cores = cpu.cpu_count()
    if threads is None:
        return cores
    if threads < 1:
        raise InvalidConfigError(f"threads must be at least 1, got {threads}")
    if threads > cores:
        logger.warning("threads=%d exceeds the %d available cores; using %d", threads, cores, cores)
        return cores
    return threads


def device_signature(device: Device) -> str:
    """A short, stable hash of the hardware an engine is built for (part of every cache key)."""
    # On CPU the instruction set decides what engines compile to; the core count does not.
    info = gpu.gpu_info(device.index) if device.is_gpu else {k: v for k, v in cpu.cpu_info().items() if k != "cores"}
    text = f"{device.kind}|{sorted(info.items())}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
