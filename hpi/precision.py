"""The precision policy on a device: which reduced precisions this CPU runs natively, and why not where it cannot
(every candidate that is skipped says so), and whether int8 needs guarding against 16-bit overflow.

It reads the CPU through :mod:`hpi.cpu` as a module (``cpu.cpu_info()``), so a test that fakes the flags there is
seen here too.
"""

from __future__ import annotations

from hpi import cpu
from hpi.device import Device


def int8_overflow_risk(device: Device) -> bool:
    """Whether int8 kernels on ``device`` sum pairs of int8 products in 16 bits, which can saturate: a CPU with AVX2
    but without VNNI, AVX-VNNI or AMX-INT8 (``vpmaddubsw`` then ``vpmaddwd``). Quantisation then keeps weights to 7
    bits (NNCF's overflow fix, ONNX Runtime's ``reduce_range``): :mod:`hpi.artefacts.quantize`."""
    return not device.is_gpu and not cpu.cpu_has_int8_dot()


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
    flags = set(cpu.cpu_info()["flags"])  # type: ignore[arg-type]
    if precision == "bf16":
        why = None if cpu.cpu_has_bf16() else "this CPU has neither AMX-BF16 nor AVX512-BF16"
    elif precision == "int8":
        why = None if cpu.INT8_MIN_FLAG in flags else \
            "this CPU has no AVX2, which int8 kernels need for their 8-bit multiply-add (vpmaddubsw)"
    else:
        why = f"{precision} does not run natively on this CPU"
    cap = cpu.cpu_info().get("isa_cap")
    return f"{why} ({cpu.ISA_CAP_ENV}={cap})" if why and cap else why
