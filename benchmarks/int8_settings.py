"""Compare int8 quantisation settings (NNCF for OpenVINO, quantize_static for ONNX Runtime) on zoo models.

Two phases, so that building (CPU-heavy) can run beside other work and timing on a quiet machine:

    HPI_CACHE_DIR=/tmp/c python benchmarks/int8_settings.py build --models PP-LCNet_x1_0
    HPI_CACHE_DIR=/tmp/c python benchmarks/int8_settings.py time --models PP-LCNet_x1_0

``build`` quantises every variant into the engine cache and writes each one's drift against the Paddle fp32
reference (top-1 agreement, top-5 overlap, cosine, relative error on the built-in photos and their mirrors);
``time`` times each variant at batch 1 (median of ``--rounds`` interleaved rounds) and prints one table row per
variant. Engines are plain sessions with hpi's settings (ORT: sequential, spinning; OpenVINO: LATENCY, f32 hint,
static batch 1), so only the quantisation differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

from hpi.artefacts.quantize import OPENVINO_INT8, ORT_INT8, quantize_onnx, quantize_openvino
from hpi.cache import EngineCache
from hpi.calibration import calibration_set
from hpi.config import AccuracyGate
from hpi.harness import time_callable
from hpi.loading import locate_model
from hpi.selection.gate import compare_outputs
from hpi.selection.measure import reference_inputs
from hpi.source import ModelSource

_SCOPE = {"keep_first_conv": True, "keep_head": True}
VARIANTS = {
    "ov fp32": ("openvino", None),
    "ov bf16": ("openvino", "bf16"),
    "ov int8 mixed, no scope": ("openvino", dataclasses.replace(OPENVINO_INT8, preset="mixed",
                                                                               keep_first_conv=False, keep_head=False)),
    "ov int8 performance, no scope": ("openvino", dataclasses.replace(OPENVINO_INT8, keep_first_conv=False,
                                                                      keep_head=False)),
    "ov int8 performance + scope": ("openvino", OPENVINO_INT8),
    "ov int8 mixed + scope": ("openvino", dataclasses.replace(OPENVINO_INT8, preset="mixed")),
    "ov int8 performance + scope, full bias correction": ("openvino", dataclasses.replace(
        OPENVINO_INT8, fast_bias_correction=False)),
    "ort fp32": ("onnxruntime", None),
    "ort int8 U8S8 minmax + scope": ("onnxruntime", dataclasses.replace(ORT_INT8, activations="uint8", **_SCOPE)),
    "ort int8 S8S8 minmax + scope": ("onnxruntime", dataclasses.replace(ORT_INT8, activations="int8", **_SCOPE)),
    "ort int8 U8S8 minmax, no scope": ("onnxruntime", dataclasses.replace(ORT_INT8, keep_first_conv=False,
                                                                         keep_head=False)),
    "ort int8 U8S8 percentile + scope": ("onnxruntime", dataclasses.replace(ORT_INT8, method="percentile", **_SCOPE)),
    "ort int8 U8S8 entropy + scope": ("onnxruntime", dataclasses.replace(ORT_INT8, method="entropy", **_SCOPE)),
}


def model_file(source, cache: EngineCache, backend: str, setting, calibrate: str | None = None  # noqa: ANN001
               ) -> Path:
    from hpi.artefacts.onnx import export_onnx
    from hpi.artefacts.openvino import convert_ir

    calib = calibration_set(calibrate)
    if backend == "openvino":
        if setting is None or isinstance(setting, str):
            return convert_ir(source, cache).path
        return quantize_openvino(source, cache, calib, setting).path
    if setting is None:
        return export_onnx(source, cache).path
    return quantize_onnx(source, cache, calib, setting).path


def session(path: Path, backend: str, setting, threads: int):  # noqa: ANN001, ANN201
    """A callable running one batch."""
    if backend == "openvino":
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        model.reshape({model.inputs[0].get_any_name(): [1, *list(model.inputs[0].get_partial_shape())[1:]]})
        hint = "bf16" if setting == "bf16" else "f32"
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                                                     "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        return lambda x: request.infer({0: x}, share_inputs=True)[0].copy()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def reference(source, inputs: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """The fp32 reference's outputs: Paddle Inference, or ONNX Runtime for an ONNX-only model."""
    from hpi.backends import get_backend
    from hpi.device import Device
    from hpi.selection.candidates import reference_backend

    with get_backend(reference_backend(source)).engine(source, Device("cpu"), {"threads": 2}) as engine:
        return np.concatenate([engine.run(inputs[i:i + 1])[0] for i in range(len(inputs))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["build", "time"])
    parser.add_argument("--models", default="PP-LCNet_x1_0,PP-HGNetV2-B4")
    parser.add_argument("--model-dir", help="a model directory instead of --models (e.g. trained weights)")
    parser.add_argument("--variants", help="substring filters on the variant names, separated by |")
    parser.add_argument("--calibrate", help="calibration images (default: the built-in photos)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.environ.get("HPI_CACHE_DIR", "."), help="where drift.json goes")
    args = parser.parse_args(argv)
    cache = EngineCache()
    variants = {k: v for k, v in VARIANTS.items() if not args.variants or any(f in k for f in args.variants.split("|"))}
    drift_file = Path(args.out) / "int8_drift.json"
    drift = json.loads(drift_file.read_text()) if drift_file.exists() else {}
    for name in [args.model_dir] if args.model_dir else args.models.split(","):
        source = ModelSource.from_path(name) if args.model_dir else locate_model(name, build=True)
        name = source.name
        inputs = reference_inputs(source)
        if args.phase == "build":
            ref = reference(source, inputs)
            for label, (backend, setting) in variants.items():
                run = session(model_file(source, cache, backend, setting, args.calibrate), backend, setting, args.threads)
                out = np.concatenate([run(inputs[i:i + 1]) for i in range(len(inputs))])
                precision = "int8" if "int8" in label else "bf16" if setting == "bf16" else "fp32"
                acc = compare_outputs(source.spec.task, ref, out, precision, AccuracyGate())
                drift[f"{name} | {label}" + (f" | {args.calibrate}" if args.calibrate else "")] = dataclasses.asdict(acc)
                print(f"{name:16} {label:42} top1 {acc.top1_agreement:.3f} top5 {acc.top5_overlap:.3f} "
                      f"cos {acc.min_cosine:.5f} rel {acc.max_rel_error:.3e} {'PASS' if acc.passed else 'FAIL'}",
                      flush=True)
            drift_file.write_text(json.dumps(drift, indent=1))
            continue
        runs = {label: session(model_file(source, cache, b, s), b, s, args.threads) for label, (b, s) in variants.items()}
        x = inputs[:1].copy()
        p50s: dict[str, list[float]] = {label: [] for label in runs}
        for _ in range(args.rounds):
            for label, run in runs.items():
                p50s[label].append(time_callable(lambda run=run, x=x: run(x), budget_s=args.budget).p50_ms)
        with open("/proc/loadavg", encoding="utf-8") as fh:
            load = fh.read().split()[:3]
        for label, values in p50s.items():
            acc = drift.get(f"{name} | {label}", {})
            print(f"| {name} | {label} | {float(np.median(values)):.2f} | {' / '.join(f'{v:.2f}' for v in values)} | "
                  f"{acc.get('top1_agreement', float('nan')):.3f} | {acc.get('min_cosine', float('nan')):.5f} | "
                  f"{acc.get('max_rel_error', float('nan')):.2e} | {'pass' if acc.get('passed') else 'FAIL'} |",
                  flush=True)
        print(f"loadavg {' '.join(load)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
