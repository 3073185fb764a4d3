"""This CPU: its cores, its instruction-set flags (what engines compile to), and the ``HPI_MAX_CPU_ISA`` cap that
lets it stand in for an older CPU (hidden flags, engine libraries capped when hpi is imported)."""

from __future__ import annotations

import functools
import logging
import os
import platform
import sys

from hpi.errors import InvalidConfigError

logger = logging.getLogger(__name__)


def cpu_count() -> int:
    """Cores this process may use (affinity-aware), never less than 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


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
