"""End to end on real photo sizes: hpi normal mode, high-performance mode, and high-performance mode with
reduced-scale JPEG decoding (a gated candidate), from a JPEG path to top-5, batch 1 (issue 21, item 4).

Two photos: the benchmarks' 500x375 JPEG (:func:`hpi.bench.measure.stage_image`) and a 12 MP phone-size one
(scikit-image's ``coffee`` enlarged to 4000x3000, quality 90; :func:`hpi.selection.reduced_decode.photo_jpeg`).
Before timing, :func:`hpi.selection.reduced_decode.judge` runs the high-performance engine on 12 MP JPEGs of the
gate's photos (the built-in photos and their mirrors) decoded both ways and judges the reduced outputs with the
gate's reduced-precision rules; the verdict is printed and recorded beside the timings (reduced decoding is timed
either way, labelled "rejected by the gate" where a model would not use it).

Method: every configuration loaded once in this process (one engine shared by the two high-performance ones),
warm-up, then ``--rounds`` rounds; in each round every configuration makes ``--per-round`` predictions of each
photo back to back, the order rotating between rounds. Wall time per ``predict`` call (reading the file,
decoding, preprocessing, inference, top-5, the result object). Medians over all calls and each round's median
are reported, with ratios to normal mode per round (their median and range). ``/proc/loadavg`` is recorded at
start and end: on a shared machine the figures are only as quiet as it is.

PaddleX itself is not in hpi's environment (see ``benchmarks/paddlex_e2e.py`` for its own virtual environment);
this script compares hpi's modes, and says so in its report.

Run (from the repository root; builds the seeded zoo model into the store first if it is missing)::

    python benchmarks/reduced_decode_e2e.py [--model PP-LCNet_x1_0] [--rounds 7] [--per-round 5] [--note TEXT]

Writes ``benchmarks/results/reduced_decode_e2e_<cpu kind>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


import hpi  # noqa: E402
from hpi.bench.measure import stage_image, weights_label  # noqa: E402
from hpi.bench.report import machine_description  # noqa: E402
from hpi.bench.targets import cpu_kind  # noqa: E402
from hpi.loading import locate_model  # noqa: E402
from hpi.models.classification import Predictor  # noqa: E402
from hpi.selection.measure import reference_images  # noqa: E402
from hpi.selection.reduced_decode import judge, photo_jpeg  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "-"


def phone_photo(directory: Path) -> Path:
    """scikit-image's coffee photo as a 12 MP (4000x3000) JPEG of quality 90."""
    from skimage import data

    path = directory / "phone_4000x3000.jpg"
    path.write_bytes(photo_jpeg(data.coffee()))
    return path


def one_call(model: Predictor, path: str) -> float:
    start = time.perf_counter()
    results = list(model.predict(path))
    elapsed = (time.perf_counter() - start) * 1e3
    if len(results) != 1:
        raise RuntimeError(f"{path}: {len(results)} results")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="PP-LCNet_x1_0")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=None, help="output path without extension")
    args = ap.parse_args(argv)

    kind = cpu_kind()
    source = locate_model(args.model, args.model_dir, build=True)
    started = loadavg()
    with tempfile.TemporaryDirectory(prefix="hpi-e2e-") as tmp:
        photos = {"500x375": str(stage_image(Path(tmp))), "4000x3000": str(phone_photo(Path(tmp)))}
        cfg = {"threads": args.threads}
        normal = hpi.create_model(args.model, source.directory, device="cpu", hpi_config=cfg)
        hp = hpi.create_model(args.model, source.directory, device="cpu", use_hpip=True, hpi_config=cfg)
        reduced = Predictor(hp.source, hp.engine, hp.choice, reduced_decode=True)  # the same engine
        gate_jpegs = [photo_jpeg(rgb) for _, rgb in reference_images()]
        verdict = judge(hp.source, hp.engine, gate_jpegs)
        print(verdict.describe())
        # Timed either way, so that its speed is known; a model that fails the gate would not use it (labelled).
        label = "hpi high-performance + reduced decode" + ("" if verdict.passed else " (rejected by the gate)")
        models = {"hpi normal": normal, "hpi high-performance": hp, label: reduced}
        for model in models.values():
            for path in photos.values():
                for _ in range(args.warmup):
                    one_call(model, path)
        times: dict[str, dict[str, list[list[float]]]] = {m: {p: [] for p in photos} for m in models}
        order = list(models)
        for r in range(args.rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                for label, path in photos.items():
                    times[name][label].append([one_call(models[name], path) for _ in range(args.per_round)])
            print(f"round {r + 1}/{args.rounds} done (load {loadavg()})", flush=True)
        choice = f"{hp.choice.backend} ({hp.choice.reason})"
        reduced._preprocess.close()  # noqa: SLF001 - its engine is hp's, closed once below
        hp.close()
        normal.close()
    ended = loadavg()

    rows = []
    for label in photos:
        base_rounds = [statistics.median(r) for r in times["hpi normal"][label]]
        for name in models:
            rounds = [statistics.median(r) for r in times[name][label]]
            ratios = [b / m for b, m in zip(base_rounds, rounds)]
            rows.append({"photo": label, "config": name, "median_ms": statistics.median(sum(times[name][label], [])),
                         "round_medians_ms": rounds, "speedup_rounds": ratios,
                         "speedup_median": statistics.median(ratios)})
    report = {"machine": machine_description(), "cpu_kind": kind.stem, "date": time.strftime("%Y-%m-%d"),
              "model": args.model, "weights": weights_label(source), "threads": args.threads,
              "rounds": args.rounds, "per_round": args.per_round, "loadavg": [started, ended], "note": args.note,
              "high_performance_choice": choice, "reduced_decode_verdict": verdict.describe(),
              "reduced_decode_passed": verdict.passed, "rows": rows, "argv": sys.argv[1:] if argv is None else argv}
    out = Path(args.out) if args.out else RESULTS / f"reduced_decode_e2e_{kind.stem}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    out.with_suffix(".md").write_text(render_md(report, kind), encoding="utf-8")
    print(render_md(report, kind))
    return 0


def render_md(rep: dict[str, Any], kind: Any) -> str:
    lines = [f"# End to end on real photo sizes: {rep['model']} ({rep['weights']} weights)", "",
             f"Machine: {rep['machine']}. CPU kind: `{rep['cpu_kind']}`. Date: {rep['date']}. Threads: "
             f"{rep['threads']}. Batch 1, `predict(path)` from a JPEG file to top-5. 1-minute load average start -> "
             f"end: {rep['loadavg'][0]} -> {rep['loadavg'][1]}.{' ' + rep['note'] if rep['note'] else ''}"]
    if getattr(kind, "emulated", False):
        lines.append(kind.emulation_note())
    lines += ["", "PaddleX is not installed in hpi's environment: this compares hpi's own modes (normal mode is "
              "Paddle Inference fp32, PaddleX's meaning of it).", "",
              f"High-performance mode chose {rep['high_performance_choice']}.", "",
              f"Gate: {rep['reduced_decode_verdict']}.", "",
              f"{rep['rounds']} interleaved rounds of {rep['per_round']} calls per photo and configuration.", "",
              "| photo | configuration | median ms | median per round | speed-up vs normal (median of rounds; "
              "range) |", "|---|---|---|---|---|"]
    for r in rep["rows"]:
        rounds = " / ".join(f"{v:.1f}" for v in r["round_medians_ms"])
        lines.append(f"| {r['photo']} | {r['config']} | {r['median_ms']:.2f} | {rounds} | "
                     f"{r['speedup_median']:.2f}x ({min(r['speedup_rounds']):.2f}-{max(r['speedup_rounds']):.2f}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
