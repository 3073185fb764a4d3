"""The visible CUDA devices and where that was learnt (cuda-python, then nvidia-smi, then Paddle), for device
checks and cache keys. :mod:`hpi.cuda` is the one module that calls the CUDA runtime; this one only asks it first."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from hpi.errors import BackendUnavailableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuFacts:
    """The visible CUDA devices and where that was learnt."""

    devices: tuple[tuple[str, int, int], ...]  # (name, compute capability major, minor) per visible device
    source: str  # "cuda-python", "nvidia-smi", "paddle", or "none"
    notes: tuple[str, ...] = ()  # why each source tried before it gave nothing


class _NoFacts(Exception):
    """A source of device facts that cannot answer here (its message says why)."""


def _from_cuda_python() -> list[tuple[str, int, int]]:
    from hpi import cuda

    if not cuda.cuda_python_installed():
        raise _NoFacts("cuda-python is not installed")
    try:
        return [cuda.device_properties(i) for i in range(cuda.device_count())]
    except BackendUnavailableError as exc:
        raise _NoFacts(str(exc)) from exc


def _visible(devices: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Apply ``CUDA_VISIBLE_DEVICES`` (integer indices) to a list of every device on the machine."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return devices
    picked = []
    for item in value.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) >= len(devices):
            break  # CUDA stops at the first invalid entry; UUIDs are not resolved here
        picked.append(devices[int(item)])
    return picked


def _from_nvidia_smi() -> list[tuple[str, int, int]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise _NoFacts("nvidia-smi is not on PATH")
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise _NoFacts(f"nvidia-smi failed: {exc}") from exc
    devices = []
    for line in out.strip().splitlines():
        name, _, cap = line.rpartition(",")
        major, _, minor = cap.strip().partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise _NoFacts(f"nvidia-smi printed {line!r}; expected 'name, major.minor'")
        devices.append((name.strip(), int(major), int(minor)))
    return _visible(devices)


def _from_paddle() -> list[tuple[str, int, int]]:
    if importlib.util.find_spec("paddle") is None:
        raise _NoFacts("paddlepaddle is not installed")
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        raise _NoFacts("the installed paddlepaddle is the CPU build")
    out = []
    for i in range(paddle.device.cuda.device_count()):
        props = paddle.device.cuda.get_device_properties(i)
        out.append((str(props.name), int(props.major), int(props.minor)))
    return out


# Tried in order; the first that lists a device answers. cuda-python is what the TensorRT runtime uses; the others
# let a machine without it (ONNX Runtime or Paddle on the GPU) still see its devices.
_SOURCES = (("cuda-python", _from_cuda_python), ("nvidia-smi", _from_nvidia_smi), ("paddle", _from_paddle))


@functools.lru_cache(maxsize=1)
def gpu_facts() -> GpuFacts:
    """The visible CUDA devices, from the first source that can list them (logged with the source used)."""
    notes = []
    for name, query in _SOURCES:
        try:
            devices = query()
        except _NoFacts as exc:
            notes.append(f"{name}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - a broken driver or framework install reads as "no device"
            notes.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if devices:
            logger.info("CUDA devices from %s: %s", name, [d[0] for d in devices])
            return GpuFacts(tuple(devices), name, tuple(notes))
        notes.append(f"{name}: no device")
    return GpuFacts((), "none", tuple(notes))


def cuda_device_count() -> int:
    """Visible CUDA devices (see :func:`gpu_facts` for where the count comes from); 0 when none is found."""
    return len(gpu_facts().devices)


def gpu_info(index: int) -> dict[str, object]:
    """Name and compute capability of CUDA device ``index`` (for cache keys), whichever source listed it."""
    facts = gpu_facts()
    if index >= len(facts.devices):
        raise BackendUnavailableError(
            f"cannot query CUDA device {index}: {len(facts.devices)} visible ({'; '.join(facts.notes) or facts.source})"
        )
    name, major, minor = facts.devices[index]
    return {"name": name, "compute_capability": f"{major}.{minor}"}
