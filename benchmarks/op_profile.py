"""Where an OpenVINO engine's time goes, op by op, against this CPU's measured roofs: the bound behind a missed target.

``run_core.py`` compares a whole model's time with its FLOPs at the measured roof; when that leaves "no hardware
bound" (the engine runs well below the roof on average), this script says which ops take the time and how close
each kind runs to the roof of the precision it ran at. It compiles the model the way hpi's OpenVINO backend does
(static batch-1 shape, ``INFERENCE_NUM_THREADS``, the ``LATENCY`` hint, an explicit precision hint; int8 from hpi's
NNCF artefact), runs it with OpenVINO's per-node performance counters, and groups the nodes by kind and kernel:

* time per image (mean over ``--runs`` inferences after a warm-up, in the quickest of ``--repeats`` series) and
  its share;
* the multiply-adds of the original ops each node computes (Convolution, GroupConvolution, MatMul), as GFLOP;
* the throughput that gives, against the roof measured here at the precision the kernel ran at
  (:func:`hpi.bench.targets.measure_peaks`): near the roof is a compute bound;
* the weights those ops read, at the kernel's precision, and the rate they were read at against the measured copy
  bandwidth: near it is a memory bound (a classifier's weights at batch 1). Far below both, with few FLOPs, is a
  latency bound (depthwise convolutions, reorders).

The totals are the engine's own time (no Python call overhead); compare them with ``hpi bench``'s p50.

    python benchmarks/op_profile.py --model PP-LCNet_x1_0 --precision bf16 [--threads 2] [--out FILE.md]

Seeded zoo weights by default (timing does not depend on the values; int8 calibrates on the built-in photos).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpi.artefacts.openvino import convert_ir  # noqa: E402
from hpi.artefacts.quantize import quantize_openvino  # noqa: E402
from hpi.backends.openvino import OV_PRECISION  # noqa: E402
from hpi.bench.report import machine_description  # noqa: E402
from hpi.bench.targets import Peaks, cpu_kind, measure_peaks  # noqa: E402
from hpi.cache import EngineCache  # noqa: E402
from hpi.calibration import calibration_set  # noqa: E402
from hpi.loading import locate_model  # noqa: E402

COMPUTE_OPS = ("Convolution", "GroupConvolution", "MatMul")
BYTES = {"fp32": 4, "bf16": 2, "int8": 1}


@dataclass
class Group:
    """The nodes of one kind that ran one kernel."""

    nodes: int = 0
    us: float = 0.0  # per image
    flop: float = 0.0  # per image
    weights: float = 0.0  # weight elements read per image


def op_work(model: Any) -> dict[str, tuple[float, float]]:
    """FLOPs (2 x multiply-adds) and weight elements of each Convolution, GroupConvolution and MatMul of a
    static-shaped ov.Model, by friendly name."""
    work = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in COMPUTE_OPS:
            continue
        out = [int(d) for d in op.get_output_shape(0)]
        weights = [int(d) for d in op.get_input_shape(1)]
        if kind == "Convolution":  # weights [Cout, Cin, kh, kw]
            macs = np.prod(out) * np.prod(weights[1:])
        elif kind == "GroupConvolution":  # weights [G, Cout/G, Cin/G, kh, kw]
            macs = np.prod(out) * np.prod(weights[2:])
        else:  # MatMul: the reduced dimension is the first input's last (or first, when transposed)
            a = [int(d) for d in op.get_input_shape(0)]
            k = a[-2] if op.get_attributes().get("transpose_a") else a[-1]
            macs = np.prod(out) * k
        work[op.get_friendly_name()] = (2.0 * float(macs), float(np.prod(weights)))
    return work


def kernel_precision(exec_type: str) -> str:
    """The precision a kernel ran at, from OpenVINO's exec type (``brgconv_avx512_1x1_bf16``, ``jit_avx2_I8``)."""
    tail = exec_type.lower().rsplit("_", 1)[-1]
    return {"bf16": "bf16", "i8": "int8", "u8": "int8", "f32": "fp32"}.get(tail, tail)


def profile(model_name: str, precision: str, threads: int, runs: int, repeats: int
            ) -> tuple[dict[tuple[str, str], Group], list[float]]:
    """Per (node kind, kernel) groups for one compiled model, from the quietest of ``repeats`` series of ``runs``
    inferences (the one with the least engine time: a busy neighbour only adds time), and every series' engine
    time per image (ms)."""
    import openvino as ov

    source = locate_model(model_name, None, build=True)
    cache = EngineCache()
    ir = quantize_openvino(source, cache, calibration_set()) if precision == "int8" else convert_ir(source, cache)
    core = ov.Core()
    model = core.read_model(str(ir.path))
    shapes = {}
    for i in model.inputs:  # batch 1; the other dimensions are static in hpi's classifier exports
        dims = i.get_partial_shape()[1:]
        if not all(d.is_static for d in dims):
            raise SystemExit(f"{model_name}: input {i.get_any_name()} has dynamic dimensions {dims}: not profiled")
        shapes[i.get_any_name()] = [1, *(d.get_length() for d in dims)]
    model.reshape(shapes)
    work = op_work(model)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_PRECISION_HINT": OV_PRECISION[precision], "PERF_COUNT": True})
    node_work = {}  # runtime node name -> (FLOPs, weight elements) of the original ops it computes
    for node in compiled.get_runtime_model().get_ops():
        info = node.get_rt_info()
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        done = [work[n] for n in names.split(",") if n in work]
        flop, weights = sum(f for f, _ in done), sum(w for _, w in done)
        if not done and info["layerType"].astype(str) == "FullyConnected":
            # a MatMul fused under its bias Add's name: K x N weights, 2 x output elements x K FLOPs
            k = int(node.get_input_partial_shape(0)[-1].get_length())
            out = [int(d) for d in node.get_output_shape(0)]
            flop, weights = 2.0 * k * float(np.prod(out)), float(k * out[-1])
        node_work[node.get_friendly_name()] = (flop, weights)
    request = compiled.create_infer_request()
    feed = {i.get_any_name(): np.random.default_rng(0).standard_normal(list(i.get_shape())).astype(np.float32)
            for i in compiled.inputs}
    for _ in range(20):
        request.infer(feed)
    series = []
    for _ in range(repeats):
        groups: dict[tuple[str, str], Group] = defaultdict(Group)
        for run in range(runs):
            request.infer(feed)
            for p in request.profiling_info:
                if p.status != p.Status.EXECUTED:
                    continue
                g = groups[(p.node_type, p.exec_type)]
                g.us += p.real_time.total_seconds() * 1e6 / runs
                if run == 0:
                    g.nodes += 1
                    flop, weights = node_work.get(p.node_name, (0.0, 0.0))
                    g.flop += flop
                    g.weights += weights
        series.append(dict(groups))
    totals = [sum(g.us for g in groups.values()) / 1e3 for groups in series]
    return series[int(np.argmin(totals))], totals


def report(model_name: str, precision: str, threads: int, runs: int, repeats: int, heading: str = "#",
           peaks: Peaks | None = None) -> str:
    """The profile as Markdown, against ``peaks`` (measured here when not given)."""
    peaks = peaks or measure_peaks(threads)
    groups, totals = profile(model_name, precision, threads, runs, repeats)
    total = sum(g.us for g in groups.values())
    kind = cpu_kind()
    lines = [f"{heading} {model_name}, OpenVINO {precision}, {threads} threads, batch 1: time by op",
             "",
             f"Machine: {machine_description()}. CPU kind: `{kind.stem}`; flags: {' '.join(kind.flags)}. "
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Weights: seeded (timing only).",
             *([kind.emulation_note()] if kind.emulated else []),
             f"Measured roofs: {', '.join(f'{p} {g:.0f} GFLOPS' for p, g in peaks.gflops.items())}; memory copy "
             f"{peaks.memory_gbps:.1f} GB/s. Engine time per image (sum of OpenVINO's node counters, mean of {runs} "
             f"inferences) in {repeats} series: {' / '.join(f'{t:.3f}' for t in totals)} ms; the table is the "
             f"quickest ({total / 1e3:.3f} ms).",
             "",
             "| node kind | kernel | nodes | us per image | share | GFLOP | GFLOPS | of the compute roof at its "
             "precision | weights MB at that precision | weights read GB/s (of the copy roof) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (node, kernel), g in sorted(groups.items(), key=lambda kv: -kv[1].us):
        if g.us < 0.005 * total:
            continue
        rate = g.flop / (g.us * 1e-6) / 1e9 if g.flop and g.us else None
        roof = peaks.gflops.get(kernel_precision(kernel))
        share_of_roof = f"{rate / roof:.0%} of {kernel_precision(kernel)} {roof:.0f}" if rate and roof else "-"
        megabytes = g.weights * BYTES.get(kernel_precision(kernel), 4) / 1e6
        read = f"{megabytes / 1e3 / (g.us * 1e-6):.1f} ({megabytes / 1e3 / (g.us * 1e-6) / peaks.memory_gbps:.0%})" \
            if g.weights else "-"
        lines.append(f"| {node} | {kernel} | {g.nodes} | {g.us:.1f} | {g.us / total:.1%} | "
                     f"{g.flop / 1e9:.4f} | {f'{rate:.0f}' if rate else '-'} | {share_of_roof} | "
                     f"{f'{megabytes:.2f}' if g.weights else '-'} | {read} |")
    rest = sum(g.us for g in groups.values() if g.us < 0.005 * total)
    lines.append(f"| (each under 0.5%) | | | {rest:.1f} | {rest / total:.1%} | | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="PP-LCNet_x1_0")
    parser.add_argument("--precision", choices=sorted(OV_PRECISION), default="bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    text = report(args.model, args.precision, args.threads, args.runs, args.repeats)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
