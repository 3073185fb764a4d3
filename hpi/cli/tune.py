"""``hpi tune``: the deployment with the most requests per second inside a latency budget, measured through the
real server on loopback, written as the record (and command) that runs it (:func:`hpi.tune.tuner.tune`)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from hpi.cli.common import add_command, progress_printer


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi tune`` to the main parser's subcommands."""
    return add_command(
        subparsers,
        "tune",
        add_arguments,
        run,
        help="find the fastest deployment inside a latency budget, measured under load",
        description=(
            "Starting from the candidates that pass selection's accuracy gate, search workers x threads, max batch "
            "size, batching window and OpenVINO streams (a hill-climb over the ordered knobs), measure each "
            "deployment through the target's real server ('hpi serve', or tritonserver) on loopback at rising "
            "client concurrency, and keep the most requests per second "
            "whose latency percentile is inside the budget. Writes tune.json (read by 'hpi serve --tuned' and "
            "'hpi export --format triton --tuned'), pipeline.yaml and the report (report.png, report.html, "
            "report.md, table.json) into --output. Exit status 1 when no deployment met the budget."
        ),
    )


def duration(value: str, unit: str) -> float:
    """``20ms``, ``0.5ms``, ``2s``, ``5m`` or a bare number (in ``unit``: "ms" or "s") as that unit."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", value)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration such as 20ms, 2s or 5m, got {value!r}")
    seconds = float(m.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2) or unit]
    return seconds * 1e3 if unit == "ms" else seconds


def levels(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,2,4,8, got {value!r}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name, e.g. PP-LCNet_x1_0 (the store's, or a seeded "
                                                       "zoo build when absent)")
    parser.add_argument("--model-dir", help="the model's inference directory instead of the store")
    parser.add_argument("--latency-budget", required=True, type=lambda v: duration(v, "ms"), metavar="TIME",
                        help="the latency the percentile must stay under, e.g. 20ms")
    parser.add_argument("--percentile", type=float, default=99.0, help="latency percentile (default: 99)")
    parser.add_argument("--objective", choices=["throughput"], default="throughput",
                        help="what is maximised inside the budget (default: throughput)")
    parser.add_argument("--target", choices=["serve", "triton", "ray"], default="serve",
                        help="the deployment written: serve (measured through hpi serve), triton (measured through "
                             "nvidia-pytriton's tritonserver on the Python-engine repository; hpi serve stands in "
                             "where that server cannot run) or ray (hpi serve stands in; the record says so)")
    parser.add_argument("--concurrency", type=levels, default=[1, 2, 4, 8, 16], metavar="N,N,...",
                        help="client connections per load level, ascending (default: 1,2,4,8,16)")
    parser.add_argument("--time-budget", type=lambda v: duration(v, "s"), default=300.0, metavar="TIME",
                        help="no new measurement starts after this (default: 300s)")
    parser.add_argument("--level-seconds", type=float, default=2.0,
                        help="measured seconds per load level (default: 2)")
    parser.add_argument("--output", default="tune", help="output directory (default: ./tune)")
    parser.add_argument("--host", default="127.0.0.1", help="the printed command's address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="the printed command's port (default: 8080)")
    parser.add_argument("--cache-dir", help="engine cache (default: $HPI_CACHE_DIR or the user cache)")
    parser.add_argument("--remeasure", action="store_true", help="measure again even if a record is cached")


def run(args: argparse.Namespace) -> int:
    from hpi.tune.tuner import tune

    result = tune(args.model, model_dir=args.model_dir, budget_ms=args.latency_budget, percentile=args.percentile,
                  objective=args.objective, target=args.target, concurrency=args.concurrency,
                  time_budget_s=args.time_budget, output=args.output, level_seconds=args.level_seconds,
                  host=args.host, port=args.port, cache_dir=args.cache_dir, remeasure=args.remeasure,
                  progress=progress_printer())
    rec = result.record
    print(result.message + (" (cached record)" if result.from_cache else ""))
    print(f"search: {rec['search']['method']}; {rec['search']['measured']} of {rec['search']['space_size']} "
          f"deployments measured; {rec['search']['stopped']}"
          + ("; the space on 2 cores is small (workers x threads: 1x2 or 2x1)" if rec["search"]["small_space"]
             else ""))
    if rec["target"] != "serve":
        print(f"measured through {rec['measured_through']}")
    print(f"record: {result.output / 'tune.json'}; report: {result.output / 'report.html'} (and .png, .md, "
          f"table.json)")
    if not result.met:
        print(f"hpi tune: {result.message}", file=sys.stderr)
        return 1
    if rec.get("serve_command"):
        print("run it with:")
        print(f"  {rec['serve_command']}")
        if rec.get("serve_command_explicit"):
            print("the same, spelled out:")
            print(f"  {rec['serve_command_explicit']}")
    elif rec.get("export_command"):
        print("write the Triton repository it measured with:")
        print(f"  {rec['export_command']}")
        print("(--engine-backend onnxruntime writes the same graph for Triton's onnxruntime backend; that variant was "
              "not measured here)")
    elif rec["target"] == "triton":
        print(f"write the Triton repository with: hpi export --format triton --tuned {result.output / 'tune.json'}")
    return 0
