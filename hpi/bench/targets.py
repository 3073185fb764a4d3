"""The speed-up targets for the kind of CPU a benchmark runs on, and the measured bound that stands in the way of
a missed one.

Issue 14 states the targets per kind of CPU (batch 1, 2 threads, both modes in one run): on a CPU with AMX or
AVX-512 VNNI every core model at least the seeds' CPU speed-up and at least 1.5x, PP-HGNetV2-B4 at least 3x and
PP-LCNet_x1_0 at least 3.5x; on an AVX2-only CPU every core model at least 1.3x. :func:`cpu_kind` names the kind
(also the stem of the per-CPU result files), :func:`measure_peaks` measures this CPU's matrix-multiply throughput
per precision and its memory bandwidth, and :func:`check_target` turns a benchmark row into a verdict that, for a
miss, says by how much and which bound (compute, memory, or neither: the engine) stands in the way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hpi.cpu import cpu_info
from hpi.device import Device
from hpi.precision import precision_reason

TARGET_BATCH = 1
TARGET_THREADS = 2
AMX_VNNI_FLAGS = frozenset({"amx_bf16", "amx_int8", "amx_tile", "avx512_vnni"})
# Model-specific targets on an AMX / AVX-512 VNNI CPU (every core model also gets max(1.5, seeds' speed-up)).
AMX_VNNI_MODEL_TARGETS = {"PP-HGNetV2-B4": 3.0, "PP-LCNet_x1_0": 3.5}
AMX_VNNI_FLOOR = 1.5
AVX2_FLOOR = 1.3


@dataclass(frozen=True)
class CpuKind:
    """A kind of CPU, as far as the targets and the result files are concerned."""

    stem: str  # file-name part: "intel-xeon-amx", "amd-epyc-avx2"
    target_class: str | None  # "amx-vnni", "avx2" or None (the issue states no target for this kind)
    model: str  # the CPU's model name
    flags: tuple[str, ...]  # the instruction-set flags that matter (hpi.cpu.cpu_info)
    real_flags: tuple[str, ...] = ()  # under HPI_MAX_CPU_ISA: the CPU's own flags (the kind is then an emulation)

    @property
    def emulated(self) -> bool:
        return bool(self.real_flags)

    def emulation_note(self) -> str:
        """What an emulated kind is, for the header of its tables ("" for a real one)."""
        if not self.emulated:
            return ""
        hidden = " ".join(f for f in self.real_flags if f not in self.flags)
        return (f"**Emulated**: `HPI_MAX_CPU_ISA` hid {hidden} from hpi (no bf16 candidates, int8 with 7-bit weights) and capped "
                "oneDNN (Paddle Inference, OpenVINO), MKL and OpenBLAS at the flags above; ONNX Runtime's MLAS cannot "
                "be capped and used every instruction of the real CPU. The targets of the emulated kind are checked, "
                "but these figures do not stand for a real CPU of that kind.")


def cpu_kind(info: Mapping[str, Any] | None = None) -> CpuKind:
    """The kind of this CPU (or of ``info``, a :func:`hpi.cpu.cpu_info` dict): vendor, product line and the
    widest instruction set that changes what the engines compile to."""
    info = info or cpu_info()
    model, flags = str(info["model"]), tuple(info["flags"])
    words = model.lower().replace("(r)", " ").replace("(tm)", " ").split()
    vendor = next((v for v in ("intel", "amd") if v in words or any(w.startswith(v) for w in words)), "cpu")
    line = next((w for w in ("xeon", "epyc", "core", "ryzen", "threadripper", "opteron") if w in words), None)
    fs = set(flags)
    if fs & {"amx_bf16", "amx_int8", "amx_tile"}:
        isa = "amx"
    elif "avx512_vnni" in fs:
        isa = "avx512-vnni"
    elif "avx512f" in fs:
        isa = "avx512"
    elif "avx2" in fs:
        isa = "avx2"
    else:
        isa = "baseline"
    target_class = "amx-vnni" if fs & AMX_VNNI_FLAGS else ("avx2" if "avx2" in fs and "avx512f" not in fs else None)
    real = tuple(info.get("real_flags", ())) if info.get("isa_cap") else ()
    stem = "-".join(p for p in (vendor, line, isa, "emulated" if real else None) if p)
    return CpuKind(stem, target_class, model, flags, real)


def target_for(model: str, kind: CpuKind, published_speedup: float | None) -> tuple[float | None, str]:
    """The speed-up ``model`` must reach on ``kind`` and where that figure comes from; (None, why) when the issue
    states none for this kind of CPU."""
    if kind.target_class == "amx-vnni":
        floor = max(AMX_VNNI_FLOOR, published_speedup or 0.0)
        source = f"seeds' {published_speedup:.2f}x" if published_speedup and published_speedup > AMX_VNNI_FLOOR \
            else f"{AMX_VNNI_FLOOR}x floor"
        if AMX_VNNI_MODEL_TARGETS.get(model, 0.0) > floor:
            return AMX_VNNI_MODEL_TARGETS[model], f"{model}'s own target on AMX / AVX-512 VNNI"
        return floor, source
    if kind.target_class == "avx2":
        return AVX2_FLOOR, f"{AVX2_FLOOR}x on an AVX2-only CPU"
    return None, f"no target is stated for a CPU of kind {kind.stem}"


@dataclass(frozen=True)
class Peaks:
    """Measured throughput of this CPU at ``threads`` threads: dense matrix multiply per precision (GFLOPS, 2 per
    multiply-add) and memory copy bandwidth (GB/s, read + write)."""

    threads: int
    gflops: dict[str, float]  # precision -> GFLOPS; a precision absent was not measured (see ``notes``)
    memory_gbps: float
    notes: dict[str, str]  # how each figure was measured, or why a precision was not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _best_seconds(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_peaks(threads: int = TARGET_THREADS, *, n: int = 2048, repeats: int = 20) -> Peaks:
    """Measure the compute and memory roofs the targets are checked against (a few seconds), each the best of
    ``repeats`` runs (a roof: a busy neighbour only lowers a figure). fp32: numpy's sgemm
    of ``n`` x ``n`` matrices; bf16 and int8: the same product compiled by OpenVINO (bf16 inference precision; int8
    as a fake-quantized u8 input times int8 weights, which OpenVINO runs as an integer FullyConnected, the input's
    quantization included), where the CPU has the instructions and OpenVINO is installed; memory: copying a 256 MB
    array."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    flop = 2.0 * n**3
    gflops = {"fp32": flop / _best_seconds(lambda: a @ b, repeats) / 1e9}
    notes = {"fp32": f"numpy sgemm {n}x{n}, best of {repeats} (numpy's BLAS threads: the machine's)"}
    for precision in ("bf16", "int8"):
        why_not = precision_reason(precision, Device("cpu"))
        try:
            seconds = None if why_not else _openvino_matmul_seconds(a, b, precision, threads, repeats)
        except ImportError:
            why_not = "OpenVINO is not installed"
        if why_not:
            notes[precision] = f"not measured: {why_not}"
        else:
            gflops[precision] = flop / seconds / 1e9  # type: ignore[operator]
            notes[precision] = f"OpenVINO MatMul {n}x{n} at {precision}, {threads} threads, best of {repeats}"
    src = np.ones(64 * 2**20, dtype=np.float32)  # 256 MB: far beyond the caches
    dst = np.empty_like(src)
    seconds = _best_seconds(lambda: np.copyto(dst, src), 3)
    notes["memory"] = "numpy copy of 256 MB (read + write), one thread"
    return Peaks(threads, gflops, 2 * src.nbytes / seconds / 1e9, notes)


def _openvino_matmul_seconds(a: np.ndarray, b: np.ndarray, precision: str, threads: int, repeats: int) -> float:
    import openvino as ov
    import openvino.opset13 as ops

    param = ops.parameter(list(a.shape), ov.Type.f32)
    if precision == "int8":
        lo, hi = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
        scale = 127 / float(np.abs(b).max())
        weights = ops.multiply(ops.convert(ops.constant(np.round(b * scale).astype(np.int8)), ov.Type.f32),
                               ops.constant(np.float32(1 / scale)))
        product = ops.matmul(ops.fake_quantize(param, lo, hi, lo, hi, 256), weights, False, False)
    else:
        product = ops.matmul(param, ops.constant(b), False, False)
    compiled = ov.Core().compile_model(ov.Model([product], [param]), "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return _best_seconds(lambda: request.infer({0: a}), repeats)


BYTES_PER_WEIGHT = {"fp32": 4, "bf16": 2, "int8": 1}


@dataclass(frozen=True)
class TargetCheck:
    """One benchmark row against its target."""

    model: str
    speedup: float
    target: float | None
    target_from: str
    met: bool | None  # None: no target applies
    text: str  # the verdict, and for a miss how much and which bound stands in the way

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_target(
    row: Mapping[str, Any],
    kind: CpuKind,
    peaks: Peaks | None,
    *,
    macs: int | None,
    params: int | None,
    overhead_ms: float | None = None,
) -> TargetCheck:
    """Check one summary row (model, speedup, normal_p50_ms, hpi_p50_ms, hpi_backend, published_speedup) against
    its target. For a miss: the time high-performance mode would need, the compute bound at the winner's precision
    and at the fastest precision measured here (``macs`` multiply-adds per image at ``peaks``), the memory bound
    (streaming the ``params`` weights once at the measured bandwidth), and ``overhead_ms`` (end to end minus
    inference of high-performance mode: preprocessing and Python, outside this inference target)."""
    model, speedup = str(row["model"]), float(row["speedup"])
    target, source = target_for(model, kind, row.get("published_speedup"))
    if target is None:
        return TargetCheck(model, speedup, None, source, None, f"{speedup:.2f}x; {source}")
    if speedup >= target:
        return TargetCheck(model, speedup, target, source, True, f"met: {speedup:.2f}x >= {target:.2f}x ({source})")
    needed_ms = float(row["normal_p50_ms"]) / target
    precision = str(row["hpi_backend"]).rsplit("[", 1)[-1].rstrip("]")
    parts = [f"missed by {target / speedup:.2f}x: {speedup:.2f}x < {target:.2f}x ({source}); high-performance mode "
             f"would need {needed_ms:.2f} ms per image, it took {float(row['hpi_p50_ms']):.2f} ms"]
    if peaks is None or macs is None:
        parts.append("bound not measured (no roofline measurement or no FLOPs figure for this model)")
        return TargetCheck(model, speedup, target, source, False, "; ".join(parts))
    bounds = {p: 2.0 * macs / (g * 1e9) * 1e3 for p, g in peaks.gflops.items()}
    fastest = min(bounds, key=bounds.get)  # type: ignore[arg-type]
    memory_ms = params * BYTES_PER_WEIGHT.get(fastest, 4) / (peaks.memory_gbps * 1e9) * 1e3 if params else None
    at_winner = bounds.get(precision)
    if at_winner is not None:
        parts.append(f"compute bound at {precision}: {at_winner:.2f} ms ({2 * macs / 1e9:.2f} GFLOP at the measured "
                     f"{peaks.gflops[precision]:.0f} GFLOPS)")
    if fastest != precision:
        parts.append(f"at {fastest}: {bounds[fastest]:.2f} ms ({peaks.gflops[fastest]:.0f} GFLOPS)")
    if memory_ms is not None:
        parts.append(f"memory bound ({fastest} weights once at {peaks.memory_gbps:.1f} GB/s): {memory_ms:.2f} ms")
    if bounds[fastest] > needed_ms:
        parts.append(f"stands in the way: compute, even at {fastest} ({bounds[fastest]:.2f} ms > {needed_ms:.2f} ms)"
                     + ("; only fewer bits (int8) can close it" if "int8" not in bounds else ""))
    elif memory_ms is not None and memory_ms > needed_ms:
        parts.append(f"stands in the way: memory ({memory_ms:.2f} ms > {needed_ms:.2f} ms)")
    elif at_winner is not None and at_winner > needed_ms:
        parts.append(f"stands in the way: compute at the chosen {precision} ({at_winner:.2f} ms > {needed_ms:.2f} "
                     f"ms); {fastest} could reach it ({bounds[fastest]:.2f} ms) but no {fastest} candidate passed "
                     "the gate or ran faster")
    else:
        efficiency = bounds[fastest] / float(row["hpi_p50_ms"])
        parts.append(f"no hardware bound: the needed time is above the {fastest} compute and memory bounds; the "
                     f"engine reaches {efficiency:.0%} of the {fastest} roof (kernel and graph efficiency)")
    if overhead_ms is not None:
        parts.append(f"outside this inference target: {overhead_ms:.2f} ms of preprocessing and Python per image "
                     "end to end")
    return TargetCheck(model, speedup, target, source, False, "; ".join(parts))
