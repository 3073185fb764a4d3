"""End to end, side by side: PaddleX's own normal mode against hpi, from a JPEG path to top-5, batch 1.

Target (issue "Fused preprocessing"): hpi's high-performance mode at least 2.5x faster end to end than PaddleX's
normal mode at 2 CPU threads, on PP-LCNet_x1_0 and a 500x375 JPEG.

Candidates, all loading the same PaddleX-format directory (hpi's zoo build of PP-LCNet_x1_0 by default) and all
predicting from the same file path with ``predict(path, batch_size=1, topk=5)``:

* ``paddlex_2t``: ``paddlex.create_model(name, model_dir, device="cpu", engine_config={"cpu_threads": 2})``.
  In PaddleX 3.7.2 the documented ``pp_option=PaddlePredictorOption(cpu_threads=2)`` is silently dropped (the
  runner keeps 10 threads), so ``engine_config`` is used; older PaddleX 3.x without ``engine_config`` gets
  ``pp_option``. The thread count the runner really got is read back and recorded.
* ``paddlex_default``: ``paddlex.create_model(name, model_dir, device="cpu")``: PaddleX's default (10 CPU math
  threads, oneDNN).
* ``hpi_hpip``: ``hpi.create_model(name, model_dir, device="cpu", use_hpip=True, hpi_config={"threads": 2})``.
* ``hpi_normal``: ``hpi.create_model(name, model_dir, device="cpu", hpi_config={"threads": 2})`` (Paddle
  Inference fp32, PaddleX's meaning of normal mode).

Method: warm-up, then ``--rounds`` rounds; in each round every candidate makes ``--per-round`` predictions back
to back, the order rotating between rounds so that all see the same machine load. Per-image wall time is taken
around each ``predict`` call (reading the file, decoding, preprocessing, inference, top-5 and the result object);
medians and p10/p90 over all predictions, and ratios of medians, are reported. ``/proc/loadavg`` is recorded at
start, after every round and at the end: on a shared 2-core machine the figures are only as quiet as it is.

Set-up (PaddleX pins numpy below 2.4, so it gets its own virtual environment; its ``[cv]`` extra is needed even
for classification because its batch sampler imports a PDF reader)::

    python -m venv /tmp/pdxvenv
    /tmp/pdxvenv/bin/pip install "paddlex[cv]" paddlepaddle==3.3.1
    /tmp/pdxvenv/bin/pip install --no-deps -e .
    /tmp/pdxvenv/bin/python -c "import numpy; print('numpy==' + numpy.__version__)" > /tmp/pdx-keep-numpy.txt
    /tmp/pdxvenv/bin/pip install -c /tmp/pdx-keep-numpy.txt platformdirs onnxruntime openvino \\
        "paddle2onnx>=2.1,<2.2" onnx
    /tmp/pdxvenv/bin/pip check   # only complaint left: hpi's opencv-python-headless (see below)

(``paddlex[cv]`` brings opencv-contrib-python, which provides the ``cv2`` hpi needs; do not add
opencv-python-headless beside it, the two packages overwrite each other's ``cv2``.)

Run (from the repository root; builds the seeded zoo model into the store first if it is missing; no model hub
is contacted; ``HPI_HOME`` / ``HPI_CACHE_DIR`` choose hpi's model store and engine cache as usual)::

    nice -n 19 /tmp/pdxvenv/bin/python benchmarks/paddlex_e2e.py [--rounds 15] [--per-round 50] [--note TEXT]

``--photo 12mp`` predicts a 4000x3000 phone-size JPEG instead of the 500x375 one (give it its own ``--out``).
Writes ``benchmarks/results/paddlex_e2e.json`` and ``.md``. ``--model-dir DIR`` benchmarks another PaddleX
inference directory of the same model instead (e.g. official weights).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")  # never probe the model hosters

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import hpi  # noqa: E402  (before PaddleX loads Paddle: applies HPI_MAX_CPU_ISA)
from hpi.bench.targets import cpu_kind  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
SOURCE_IMAGE = REPO / "hpi" / "data" / "images" / "chelsea.jpg"
TARGET_RATIO = 2.5  # hpi_hpip vs paddlex_2t (issue "Fused preprocessing")
AVX2_TARGET_RATIO = 2.0  # on an AVX2-only CPU (issue 14)
ORDER = ("paddlex_2t", "hpi_hpip", "hpi_normal", "paddlex_default")


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def cpu_model() -> str:
    from hpi.cpu import cpu_info

    return str(cpu_info()["model"])


def make_jpeg(directory: Path, photo: str = "500x375") -> tuple[Path, dict[str, Any]]:
    """The photo to predict, made as the other benchmarks make it, and how: ``500x375``, chelsea.jpg resized
    (INTER_AREA) at JPEG quality 90 (:func:`hpi.bench.measure.stage_image`); ``12mp``, scikit-image's coffee as a
    4000x3000 phone-size JPEG of quality 90 (``benchmarks/reduced_decode_e2e.py``'s ``phone_photo``)."""
    if photo == "12mp":
        from reduced_decode_e2e import phone_photo

        from hpi.selection.reduced_decode import PHONE_PHOTO, PHONE_QUALITY

        path = phone_photo(directory)
        return path, {"source": "skimage.data.coffee()", "size": list(PHONE_PHOTO), "jpeg_quality": PHONE_QUALITY,
                      "bytes": os.path.getsize(path)}
    from hpi.bench.measure import STAGE_IMAGE_SIZE, stage_image

    path = stage_image(directory)
    return path, {"source": str(SOURCE_IMAGE.relative_to(REPO)), "size": list(STAGE_IMAGE_SIZE), "jpeg_quality": 90,
                  "bytes": os.path.getsize(path)}


def model_directory(name: str, given: str | None) -> Path:
    """``given``, else the store's directory for ``name``, built with ``hpi zoo build`` if missing."""
    if given:
        return Path(given)
    from hpi.zoo import store

    found = store.locate(name)
    if found is None:
        print(f"building {name} into the model store ({store.models_root()}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "hpi", "zoo", "build", name], check=True, cwd=REPO)
        found = store.locate(name)
        if found is None:
            raise SystemExit(f"hpi zoo build {name} left nothing in {store.models_root()}")
    return found


def paddlex_runner_config(model: Any) -> dict[str, Any]:
    """The run mode and thread count PaddleX's Paddle runner really got (best effort across 3.x versions)."""
    predictor = getattr(model, "_predictor", model)
    for attr in ("runner", "_runner", "pp_option", "_pp_option"):
        obj = getattr(predictor, attr, None)
        cfg = getattr(obj, "_config", None) or getattr(obj, "_cfg", None)
        if isinstance(cfg, dict):
            return {k: cfg.get(k) for k in ("run_mode", "cpu_threads", "device_type")}
    return {}


def load_paddlex(name: str, directory: Path, threads: int | None) -> tuple[Any, dict[str, Any]]:
    from paddlex import create_model

    if threads is None:
        model = create_model(model_name=name, model_dir=str(directory), device="cpu")
        how = "default"
    else:
        try:
            model = create_model(model_name=name, model_dir=str(directory), device="cpu",
                                 engine_config={"cpu_threads": threads})
            how = f"engine_config={{'cpu_threads': {threads}}}"
        except TypeError:  # PaddleX 3.x before engine_config
            from paddlex.inference import PaddlePredictorOption

            model = create_model(model_name=name, model_dir=str(directory), device="cpu",
                                 pp_option=PaddlePredictorOption(cpu_threads=threads))
            how = f"pp_option=PaddlePredictorOption(cpu_threads={threads})"
    runner = paddlex_runner_config(model)
    if threads is not None and runner.get("cpu_threads") not in (None, threads):
        raise SystemExit(f"PaddleX was asked for {threads} threads ({how}) but its runner has {runner}")
    return model, {"how": how, "runner": runner}


def load_hpi(name: str, directory: Path, *, use_hpip: bool, threads: int) -> tuple[Any, dict[str, Any]]:
    model = hpi.create_model(name, str(directory), device="cpu", use_hpip=use_hpip, hpi_config={"threads": threads})
    choice = model.choice
    return model, {
        "backend": choice.backend,
        "precision": choice.precision,
        "mode": choice.mode,
        "reason": choice.reason,
        "threads": getattr(choice.config, "threads", None),
        "engine": model.engine.describe(),
    }


def top5(model: Any, path: str) -> tuple[list[int], list[float]]:
    (res,) = list(model.predict(path, batch_size=1, topk=5))
    body = res.json["res"] if hasattr(res, "json") else res["res"]
    return (np.asarray(body["class_ids"]).reshape(-1).astype(int).tolist(),
            np.asarray(body["scores"], dtype=float).reshape(-1).round(5).tolist())


def one_call(model: Any, path: str) -> Callable[[], float]:
    def call() -> float:
        t0 = time.perf_counter()
        for res in model.predict(path, batch_size=1, topk=5):
            res["class_ids"]  # the result must exist, not just be scheduled
        return time.perf_counter() - t0

    return call


def summary(ms: list[float]) -> dict[str, float]:
    q = np.percentile(ms, [10, 50, 90])
    return {"median_ms": float(q[1]), "p10_ms": float(q[0]), "p90_ms": float(q[2]), "mean_ms": float(np.mean(ms)),
            "n": len(ms)}


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("paddlex", "paddlepaddle", "hpi", "numpy", "opencv-contrib-python", "opencv-python-headless",
                 "onnxruntime", "openvino", "paddle2onnx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    out["cv2"] = cv2.__version__
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="PP-LCNet_x1_0")
    ap.add_argument("--model-dir", default=None, help="PaddleX inference directory (default: the hpi store's)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-paddlex-default", action="store_true", help="skip PaddleX's default thread count")
    ap.add_argument("--note", default="", help="free text for the report (e.g. what else ran on the machine)")
    ap.add_argument("--photo", choices=("500x375", "12mp"), default="500x375",
                    help="the benchmarks' 500x375 JPEG, or a 4000x3000 phone-size one")
    ap.add_argument("--out", default=str(RESULTS / "paddlex_e2e"), help="output path without extension")
    args = ap.parse_args(argv)

    load_start = loadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    directory = model_directory(args.model, args.model_dir)
    tmp = tempfile.TemporaryDirectory(prefix="paddlex_e2e_")
    image_path, image_info = make_jpeg(Path(tmp.name), args.photo)
    image = str(image_path)

    candidates: dict[str, tuple[Any, dict[str, Any]]] = {}
    load_seconds: dict[str, float] = {}
    loaders: dict[str, Callable[[], tuple[Any, dict[str, Any]]]] = {
        "paddlex_2t": lambda: load_paddlex(args.model, directory, args.threads),
        "hpi_hpip": lambda: load_hpi(args.model, directory, use_hpip=True, threads=args.threads),
        "hpi_normal": lambda: load_hpi(args.model, directory, use_hpip=False, threads=args.threads),
        "paddlex_default": lambda: load_paddlex(args.model, directory, None),
    }
    names = [n for n in ORDER if not (n == "paddlex_default" and args.no_paddlex_default)]
    for name in names:
        t0 = time.perf_counter()
        candidates[name] = loaders[name]()
        load_seconds[name] = time.perf_counter() - t0
        print(f"loaded {name} in {load_seconds[name]:.1f} s: {candidates[name][1]}", flush=True)

    answers = {name: top5(model, image) for name, (model, _) in candidates.items()}
    calls = {name: one_call(model, image) for name, (model, _) in candidates.items()}
    for name in names:
        for _ in range(args.warmup):
            calls[name]()

    times: dict[str, list[float]] = {name: [] for name in names}
    round_medians: dict[str, list[float]] = {name: [] for name in names}
    round_load: list[str] = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            ms = [calls[name]() * 1e3 for _ in range(args.per_round)]
            times[name].extend(ms)
            round_medians[name].append(statistics.median(ms))
        round_load.append(loadavg())
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {round_medians[n][-1]:.2f} ms" for n in names)
              + f" | load {round_load[-1]}", flush=True)
    load_end = loadavg()

    stats = {name: summary(times[name]) for name in names}

    def ratio(slow: str, fast: str) -> dict[str, float] | None:
        if slow not in stats or fast not in stats:
            return None
        per_round = [a / b for a, b in zip(round_medians[slow], round_medians[fast])]
        return {"ratio_of_medians": stats[slow]["median_ms"] / stats[fast]["median_ms"],
                "per_round_p10": float(np.percentile(per_round, 10)),
                "per_round_p90": float(np.percentile(per_round, 90))}

    ratios = {
        "paddlex_2t / hpi_hpip": ratio("paddlex_2t", "hpi_hpip"),
        "paddlex_default / hpi_hpip": ratio("paddlex_default", "hpi_hpip"),
        "paddlex_2t / hpi_normal": ratio("paddlex_2t", "hpi_normal"),
        "hpi_normal / hpi_hpip": ratio("hpi_normal", "hpi_hpip"),
        "paddlex_default / paddlex_2t": ratio("paddlex_default", "paddlex_2t"),
    }
    ratios = {k: v for k, v in ratios.items() if v is not None}
    kind = cpu_kind()
    target = AVX2_TARGET_RATIO if kind.target_class == "avx2" else TARGET_RATIO
    met = ratios["paddlex_2t / hpi_hpip"]["ratio_of_medians"] >= target
    ref_ids = answers["paddlex_2t"][0]
    report = {
        "what": "end to end, JPEG path to top-5, batch 1, PaddleX normal mode vs hpi",
        "started": started,
        "model": args.model,
        "model_dir": str(directory),
        "weights": _weights(directory),
        "image": image_info,
        "rounds": args.rounds,
        "per_round": args.per_round,
        "warmup": args.warmup,
        "threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "cpu_kind": kind.stem, "flags": list(kind.flags),
                    "emulation": kind.emulation_note(), "load_start": load_start, "load_end": load_end,
                    "load_after_each_round": round_load, "niceness": os.nice(0)},
        "note": args.note,
        "versions": versions(),
        "candidates": {name: {**candidates[name][1], "load_s": load_seconds[name], **stats[name],
                              "round_medians_ms": round_medians[name],
                              "top5_ids": answers[name][0], "top5_scores": answers[name][1],
                              "top5_ids_equal_paddlex_2t": answers[name][0] == ref_ids}
                       for name in names},
        "ratios": ratios,
        "target": {"paddlex_2t / hpi_hpip": target, "met": met},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(render_md(report, argv if argv is not None else sys.argv[1:]),
                                      encoding="utf-8")
    print(render_md(report, argv if argv is not None else sys.argv[1:]))
    tmp.cleanup()
    return 0


def _weights(directory: Path) -> str:
    try:
        from hpi.zoo.store import weights_kind

        return weights_kind(directory) or "unknown (not from the hpi store)"
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def render_md(rep: dict[str, Any], argv: list[str]) -> str:
    labels = {
        "paddlex_2t": f"PaddleX normal mode, {rep['threads']} threads",
        "paddlex_default": "PaddleX normal mode, its default threads",
        "hpi_hpip": f"hpi high-performance mode, {rep['threads']} threads",
        "hpi_normal": f"hpi normal mode, {rep['threads']} threads",
    }
    m = rep["machine"]
    w, h = rep["image"]["size"]
    v = rep["versions"]
    nice = ["nice", "-n", str(m["niceness"])] if m["niceness"] else []  # the command as it was run
    lines = [
        "# End to end: PaddleX normal mode vs hpi (JPEG path to top-5, batch 1)",
        "",
        f"`{shlex.join([*nice, sys.executable, 'benchmarks/paddlex_e2e.py', *argv])}`",
        "",
        f"{rep['model']} ({rep['weights']} weights, {rep['model_dir']}), {w}x{h} JPEG (quality "
        f"{rep['image']['jpeg_quality']}, {rep['image']['bytes']} bytes, from {rep['image']['source']}), "
        "`predict(path, batch_size=1, topk=5)`; "
        f"{rep['rounds']} rounds x {rep['per_round']} predictions per candidate after {rep['warmup']} warm-up, "
        "the order rotating between rounds. Median and p10-p90 per image over all predictions.",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}); load average (/proc/loadavg) at start `{m['load_start']}`, "
        f"at end `{m['load_end']}`; this process's niceness {m['niceness']}. CPU kind `{m.get('cpu_kind', '-')}`; "
        f"flags: {' '.join(m.get('flags', [])) or '-'}.",
        *([m["emulation"]] if m.get("emulation") else []),
        f"Versions: PaddleX {v.get('paddlex')}, paddlepaddle {v.get('paddlepaddle')}, hpi {v.get('hpi')}, "
        f"numpy {v.get('numpy')}, OpenCV {v.get('cv2')}, onnxruntime {v.get('onnxruntime')}, "
        f"OpenVINO {v.get('openvino')}, Python {v.get('python')}.",
    ]
    if rep["note"]:
        lines += ["", f"Note: {rep['note']}"]
    lines += ["", "| candidate | how | ms/image median (p10-p90) | top-5 ids | same top-5 as PaddleX 2t |",
              "|---|---|---|---|---|"]
    for name, c in rep["candidates"].items():
        if name.startswith("paddlex"):
            runner = c.get("runner", {})
            how = f"`{c['how']}`; runner: {runner.get('run_mode')}, {runner.get('cpu_threads')} threads"
        else:
            how = f"{c['backend']}[{c['precision']}], {c['threads']} threads ({c['reason']})"
        lines.append(f"| {labels[name]} | {how} | {c['median_ms']:.2f} ({c['p10_ms']:.2f}-{c['p90_ms']:.2f}) | "
                     f"{c['top5_ids']} | {'yes' if c['top5_ids_equal_paddlex_2t'] else 'NO'} |")
    lines += ["", "| ratio (slower / faster) | ratio of medians | per-round p10-p90 |", "|---|---|---|"]
    for k, r in rep["ratios"].items():
        lines.append(f"| {k} | {r['ratio_of_medians']:.2f}x | {r['per_round_p10']:.2f}-{r['per_round_p90']:.2f}x |")
    t = rep["target"]
    lines += ["", f"Target: hpi high-performance mode >= {t['paddlex_2t / hpi_hpip']}x faster than PaddleX normal "
              f"mode at {rep['threads']} threads: **{'met' if t['met'] else 'NOT met'}** "
              f"({rep['ratios']['paddlex_2t / hpi_hpip']['ratio_of_medians']:.2f}x)."]
    lines += ["", "Notes:",
              "- In PaddleX 3.7.2 `pp_option=PaddlePredictorOption(cpu_threads=N)` does not reach the runner (it keeps "
              "10 threads); `engine_config={'cpu_threads': N}` does, and the runner's thread count is read back above.",
              "- PaddleX's default is 10 CPU math threads whatever the machine has "
              "(`PADDLE_PDX_CPU_NUM_THREADS` overrides it).",
              "- On a shared machine the absolute numbers move with the load; the ratios, taken round by round "
              "from back-to-back runs, are the steadier figure.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
