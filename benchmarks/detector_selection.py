"""Detectors under measured selection: how far legitimate fp32 reorderings and reduced precision move a detector's
boxes (the figures the box gate's defaults come from), and a measured selection of a detector.

Two commands, each printing Markdown (and writing JSON with ``--json``):

* ``agreement MODEL_DIR [MODEL_DIR ...]``: every candidate of each detector, and the fp32 reference computed other
  legitimate ways (Paddle without oneDNN, one thread; ONNX Runtime without graph fusions), against the fp32
  reference on the selection's reference photos and further real images (scikit-image's photos and its scanned
  page, each also mirrored). For each: the box gate's figures at a loose IoU (0.5: how far boxes really move)
  and the verdict of the default gate.
* ``select MODEL_DIR``: :func:`hpi.selection.measure.select` at batch 1 (the ranking, verdicts and winner).

Run timing figures on a quiet machine (nothing else heavy running); the load average is printed with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from hpi.backends import get_backend
from hpi.cache import EngineCache
from hpi.config import AccuracyGate, HpiConfig
from hpi.cpu import cpu_info
from hpi.device import Device
from hpi.models.detector_ops import DetectionSpec, detect_rows, prepare_image
from hpi.selection.candidates import Candidate, candidates, reference_candidate, reordering_variant
from hpi.selection.gate import Detections, compare_detections
from hpi.selection.measure import reference_images, select
from hpi.source import ModelSource

CPU = Device("cpu")
LOOSE = AccuracyGate(min_box_iou_fp32=0.5, min_box_iou_reduced=0.5, min_box_recall=0.0, min_box_precision=0.0,
                     max_score_drift_fp32=1.0, max_score_drift_reduced=1.0)


def more_images() -> list[tuple[str, np.ndarray]]:
    """scikit-image's other real photos and its scanned page (grey, as RGB), each also mirrored."""
    from skimage import data

    out = []
    for name in ("hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle", "page", "text",
                 "coins", "camera"):
        image = getattr(data, name)()
        image = image[0] if isinstance(image, tuple) else image
        rgb = np.ascontiguousarray(np.repeat(image[:, :, None], 3, 2) if image.ndim == 2 else image[:, :, :3])
        out += [(f"skimage {name}", rgb), (f"skimage {name} mirrored", np.ascontiguousarray(rgb[:, ::-1]))]
    return out


def detections(source: ModelSource, cand: Candidate, images: list[tuple[str, np.ndarray]], cache: EngineCache
               ) -> Detections:
    spec = DetectionSpec.from_source(source)
    backend = get_backend(cand.backend)
    with backend.engine(source, CPU, backend.make_config(cand.config), cache).load() as engine:
        rows = detect_rows(spec, engine, [prepare_image(spec, rgb) for _, rgb in images])
    return Detections(tuple(rows), tuple(n for n, _ in images), spec.draw_threshold)


def agreement(model_dirs: list[str], threads: int) -> list[dict]:
    cfg = HpiConfig(threads=threads)
    images = reference_images() + more_images()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpi-det-agree-") as tmp:
        cache = EngineCache(tmp)
        for model_dir in model_dirs:
            source = ModelSource.from_path(model_dir)
            ref = reference_candidate(source, CPU, cfg)
            cands, skipped = candidates(source, CPU, cfg)
            variant = reordering_variant(ref)
            others = [c for c in cands if c != ref] + [variant, dataclasses.replace(
                ref, config={**ref.config, "threads": 1})]
            reference = detections(source, ref, images, cache)
            counted = sum(int((r[:, 1] > reference.draw_threshold).sum()) for r in reference.rows)
            for cand in others:
                out = detections(source, cand, images, cache)
                loose = compare_detections(reference, out, cand.precision, LOOSE)
                verdict = compare_detections(reference, out, cand.precision, AccuracyGate())
                label = cand.label + "".join(f" {k}={v}" for k, v in cand.config.items()
                                             if k in ("enable_onednn", "graph_optimization") or
                                             (k == "threads" and v != ref.config.get("threads")))
                rows.append({"model": source.name, "weights": source.directory.name, "candidate": label,
                             "reference_boxes": counted, "loose_iou_0_5": loose.why,
                             "min_iou": loose.min_box_iou, "score_drift": loose.max_abs_error,
                             "recall_at_0_5": loose.box_recall, "precision_at_0_5": loose.box_precision,
                             "default_gate": "pass" if verdict.passed else "reject", "verdict": verdict.why})
            for key, reason in skipped.items():
                rows.append({"model": source.name, "candidate": key, "verdict": f"unavailable: {reason}"})
    return rows


def selection(model_dir: str, threads: int, budget_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="hpi-det-select-") as tmp:
        source = ModelSource.from_path(model_dir)
        t0 = time.perf_counter()
        record = select(source, CPU, HpiConfig(threads=threads), cache=EngineCache(tmp), batch_size=1,
                        budget_s=budget_s)
        return {"record": record.to_dict(), "wall_s": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("agreement")
    a.add_argument("model_dirs", nargs="+")
    s = sub.add_parser("select")
    s.add_argument("model_dir")
    s.add_argument("--budget-s", type=float, default=3.0)
    for p in (a, s):
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--json", type=Path)
    args = parser.parse_args()
    header = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_info(),
              "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}
    if args.command == "agreement":
        rows = agreement(args.model_dirs, args.threads)
        print("| model | candidate | counted ref. boxes | recall / precision at IoU 0.5 | min IoU | score drift "
              "| default gate | verdict |\n|---|---|---|---|---|---|---|---|")
        for r in rows:
            if "default_gate" not in r:
                print(f"| {r['model']} | {r['candidate']} | | | | | unavailable | {r['verdict']} |")
                continue
            print(f"| {r['model']} | {r['candidate']} | {r['reference_boxes']} | {r['recall_at_0_5']:.3f} / "
                  f"{r['precision_at_0_5']:.3f} | {r['min_iou']:.5f} | {r['score_drift']:.2e} | "
                  f"{r['default_gate']} | {r['verdict']} |")
        result: dict = {"rows": rows}
    else:
        result = selection(args.model_dir, args.threads, args.budget_s)
        rec = result["record"]
        print(f"selection of {rec['model_name']}: {result['wall_s']:.0f} s\n")
        print("| candidate | status | p50 ms | p50 per round | box figures / reason |\n|---|---|---|---|---|")
        for r in rec["results"]:
            c, t = r["candidate"], r["timing"]
            label = f"{c['backend']}{'+trt' if c['config'].get('use_tensorrt') else ''}[{c['precision']}]"
            rounds = " / ".join(f"{p:.2f}" for p in r["rounds_p50_ms"]) or "-"
            print(f"| {label} | {r['status']} | {t['p50_ms']:.2f} | {rounds} | {r['reason']} |" if t else
                  f"| {label} | {r['status']} | - | - | {r['reason']} |")
    header["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\n{header}")
    if args.json:
        args.json.write_text(json.dumps({**header, **result}, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
