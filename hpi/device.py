"""Devices: parsing PaddleX device strings and describing the hardware (CPU flags, CUDA devices) for cache keys."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
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


ISA_CAP_ENV = "HPI_MAX_CPU_ISA"
# What a cap hides of /proc/cpuinfo's flags, and the settings that make the engines' kernels obey it: oneDNN (in
# Paddle Inference and OpenVINO's CPU plugin), MKL (Paddle's BLAS) and OpenBLAS (numpy's, for the measured roof).
# ONNX Runtime's MLAS has no such setting: it keeps using every instruction the CPU has.
ISA_CAPS = {
    "avx2": (("avx512", "amx", "avx_vnni", "avx_ifma", "avx_ne_convert"),
             {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}),
}


def isa_cap() -> str | None:
    """The instruction-set cap ``HPI_MAX_CPU_ISA`` asks for (``avx2``), or None.

    It makes this machine stand in for an older CPU: hpi hides the newer instructions from its own decisions (no
    bf16 candidates, int8 quantised with 7-bit weights, cache keys and benchmark files of the capped kind) and :func:`apply_isa_cap` makes
    oneDNN, MKL and OpenBLAS stay within it. ONNX Runtime cannot be capped, so figures taken this way are an
    emulation, labelled as such, not a measurement of the older CPU.
    """
    value = os.environ.get(ISA_CAP_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ISA_CAPS:
        raise InvalidConfigError(f"{ISA_CAP_ENV}={value!r}: the caps hpi knows are {', '.join(ISA_CAPS)}")
    return value


def apply_isa_cap() -> str | None:
    """Set the engines' own ISA limits for ``HPI_MAX_CPU_ISA`` (without overriding ones already set), for this
    process and the ones it starts; returns the cap. Called when hpi is imported: the engines read these settings
    when they load, so an engine imported before hpi is not capped (a warning says so)."""
    cap = isa_cap()
    if cap is None:
        return None
    for name, value in ISA_CAPS[cap][1].items():
        os.environ.setdefault(name, value)
    early = [name for name in ("paddle", "openvino") if name in sys.modules]
    if early:
        logger.warning("%s=%s: %s was imported before hpi and may not obey the cap", ISA_CAP_ENV, cap,
                       ", ".join(early))
    return cap


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, object]:
    """CPU model name and the instruction-set flags that change what engines compile to (without those
    ``HPI_MAX_CPU_ISA`` hides; then ``isa_cap`` names the cap and ``real_flags`` keeps the CPU's own)."""
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
    cap = isa_cap()
    if cap is None:
        return {"model": model, "flags": relevant, "cores": cpu_count()}
    kept = [f for f in relevant if not f.startswith(ISA_CAPS[cap][0])]
    if kept == relevant:  # a CPU that has nothing the cap hides is the real thing, not an emulation of it
        return {"model": model, "flags": relevant, "cores": cpu_count()}
    return {"model": model, "flags": kept, "cores": cpu_count(), "isa_cap": cap, "real_flags": relevant}


def cpu_has_bf16() -> bool:
    """Whether the CPU has native bf16 (AVX512-BF16 or AMX), where reduced precision can pay."""
    flags = set(cpu_info()["flags"])  # type: ignore[arg-type]
    return bool(flags & {"avx512_bf16", "amx_bf16"})


INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot-product instructions (/proc/cpuinfo names)
INT8_MIN_FLAG = "avx2"  # int8 kernels' 8-bit multiply-add (vpmaddubsw) on 256-bit registers


def cpu_has_int8_dot() -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8): int8 products are then
    summed in 32 bits in one instruction."""
    flags = set(cpu_info()["flags"])  # type: ignore[arg-type]
    return bool(flags & set(INT8_DOT_FLAGS))


def int8_overflow_risk(device: Device) -> bool:
    """Whether int8 kernels on ``device`` sum pairs of int8 products in 16 bits, which can saturate: a CPU with AVX2
    but without VNNI, AVX-VNNI or AMX-INT8 (``vpmaddubsw`` then ``vpmaddwd``). Quantisation then keeps weights to 7
    bits (NNCF's overflow fix, ONNX Runtime's ``reduce_range``): :mod:`hpi.artefacts.quantize`."""
    return not device.is_gpu and not cpu_has_int8_dot()


def precision_reason(precision: str, device: Device) -> str | None:
    """Why ``device`` cannot run ``precision`` natively, or None when it can.

    fp32 runs everywhere. On a CPU, bf16 needs AMX-BF16 or AVX512-BF16: without them oneDNN and OpenVINO either
    emulate it slowly or quietly run fp32 under a bf16 label (seen on an AVX2-only AMD EPYC), so it is not offered.
    int8 needs AVX2: its 8-bit multiply-add (two instructions, where VNNI has one) is not an emulation, and it beats
    fp32 (OpenVINO int8 ResNet50 1.96x fp32 on an AVX2-only AMD EPYC Zen 3); without VNNI the intermediate 16-bit
    sums can saturate, which quantisation avoids with 7-bit weights (:func:`int8_overflow_risk`).
    Reduced precision on a GPU is decided by the backend (its CUDA device and libraries), not here.
    """
    if precision == "fp32" or device.is_gpu:
        return None
    flags = set(cpu_info()["flags"])  # type: ignore[arg-type]
    if precision == "bf16":
        why = None if cpu_has_bf16() else "this CPU has neither AMX-BF16 nor AVX512-BF16"
    elif precision == "int8":
        why = None if INT8_MIN_FLAG in flags else \
            "this CPU has no AVX2, which int8 kernels need for their 8-bit multiply-add (vpmaddubsw)"
    else:
        why = f"{precision} does not run natively on this CPU"
    cap = cpu_info().get("isa_cap")
    return f"{why} ({ISA_CAP_ENV}={cap})" if why and cap else why


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


def device_signature(device: Device) -> str:
    """A short, stable hash of the hardware an engine is built for (part of every cache key)."""
    # On CPU the instruction set decides what engines compile to; the core count does not.
    info = gpu_info(device.index) if device.is_gpu else {k: v for k, v in cpu_info().items() if k != "cores"}
    text = f"{device.kind}|{sorted(info.items())}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
