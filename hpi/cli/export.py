"""``hpi export``: build a model's engines ahead of time into the engine cache, and measure the selection."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from hpi.aot import prepare_engines
from hpi.cache import EngineCache
from hpi.cli.common import add_command, progress_printer
from hpi.config import HpiConfig
from hpi.device import parse_device
from hpi.loading import locate_model


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi export`` to the main parser's subcommands."""
    return add_command(subparsers, "export", add_arguments, run,
                       help="build every engine ahead of time and run selection, or write a Triton model "
                            "repository (--format triton)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hpi export``."""
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-dir")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backends", help="only build these (comma-separated); no selection")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--fp32-only", action="store_true")
    parser.add_argument("--calibrate", metavar="DIR",
                        help="calibrate int8 candidates on these images (default: the built-in photos)")
    parser.add_argument("--gate-data", metavar="DIR",
                        help="images from the model's own domain that the accuracy gate also judges every candidate "
                             "on, besides the built-in photos")
    parser.add_argument("--cache-dir")
    add_triton_arguments(parser)


def add_triton_arguments(parser: argparse.ArgumentParser) -> None:
    """``hpi export --format triton``'s options (:mod:`hpi.scaleout.triton`)."""
    g = parser.add_argument_group("Triton model repository (--format triton)")
    g.add_argument("--format", choices=["engines", "triton"], default="engines",
                   help="engines: build the engines and run selection (default); triton: write a Triton model "
                        "repository following the decision")
    g.add_argument("--output", help="with --format triton: the repository directory")
    g.add_argument("--max-batch-size", type=int, default=8, help="dynamic batching limit (default: 8)")
    g.add_argument("--instances", type=int, default=1,
                   help="engine instances; on CPU the cores are split evenly between them (default: 1)")
    g.add_argument("--layout", choices=["hpi", "paddlex"], default="hpi",
                   help="hpi: engine + pre/post-processing + ensemble; paddlex: PaddleX's high-stability-serving "
                        "layout (one JSON model per endpoint)")
    g.add_argument("--engine-backend", choices=["onnxruntime", "openvino", "python"],
                   help="override the Triton backend the decision maps to (python: ONNX Runtime inside the Python "
                        "backend, for Triton builds without the onnxruntime backend)")


def run_triton_export(args: argparse.Namespace) -> int:
    """``hpi export --format triton``: write the repository, then say how the decision maps onto Triton."""
    from hpi.scaleout.triton import TritonExportOptions, export_triton_repository

    if not args.output:
        raise SystemExit("hpi export --format triton: give --output REPO")
    show = progress_printer()
    source = locate_model(args.model, args.model_dir, build=True)
    options = TritonExportOptions(max_batch_size=args.max_batch_size, instances=args.instances, layout=args.layout,
                                  engine_backend=args.engine_backend, threads=args.threads)
    repo = export_triton_repository(
        source, args.output, device=args.device, options=options, cache=EngineCache(args.cache_dir),
        hpi_config=HpiConfig(threads=args.threads, allow_reduced_precision=not args.fp32_only), progress=show)
    plan = repo.manifest["plan"]
    print(f"Triton repository for {source.name}: {repo.path}")
    print(f"  decision {plan['decision']} -> Triton {plan['backend']}[{plan['precision']}] {plan['kind']} "
          f"x{plan['instances']}" + (f", {plan['threads_per_instance']} thread(s) each"
                                     if plan["threads_per_instance"] else ""))
    for note in plan["notes"]:
        print(f"  note: {note}")
    print(f"  models: {', '.join(repo.models)}; clients call {repo.entry_model}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Print each engine built (or the selection's candidates and winner), then the cache entries of the model."""
    if args.format == "triton":
        return run_triton_export(args)
    device = parse_device(args.device)
    cache = EngineCache(args.cache_dir)
    show = progress_printer()
    source = locate_model(args.model, args.model_dir, build=True)
    config = HpiConfig.from_dict({"threads": args.threads, "allow_reduced_precision": not args.fp32_only,
                                  "calibration_data": args.calibrate, "gate_data": args.gate_data})
    backends = args.backends.split(",") if args.backends else None
    prepared = prepare_engines(source, device, config, cache, backends=backends, progress=show)
    for build in prepared.builds:
        print(f"{build.label}: {build.status}" + (f": {build.reason}" if build.reason else ""))
    if prepared.record is not None:
        for res in prepared.record.results:
            t = f"p50 {res.timing.p50_ms:.2f} ms" if res.timing else ""
            print(f"{res.candidate.label:28} {res.status:11} {t:16} {res.reason}")
        print(f"high-performance mode for {source.name} on {device}: {prepared.record.winner.candidate.label} "
              f"({prepared.record.reason()})")
        if prepared.record.calibration:
            print(f"int8 calibrated on {prepared.record.calibration}")
        if prepared.record.judged_on:
            print(f"the accuracy gate judged {prepared.record.judged_on}")
    print(f"engine cache: {cache.root}")
    for e in prepared.entries:
        print(f"  {e.kind:16} {e.size_bytes / 1e6:9.2f} MB  {e.path}")
    return export_exit_code(prepared.builds)


def export_exit_code(builds: Sequence[Any]) -> int:
    """0: every engine asked for was built (a backend this machine cannot run is reported, not failed); 1: some
    built, some failed; 2: none built."""
    built = sum(b.status == "built" for b in builds)
    failed = sum(b.status == "failed" for b in builds)
    if builds and not built:
        return 2
    return 1 if failed else 0
