"""``hpi bench``: latency tables of normal vs high-performance mode with every candidate, or a pipeline's stages."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hpi.bench import bench_models, format_csv, format_json, format_markdown, plot
from hpi.bench.targets import measure_peaks
from hpi.cache import EngineCache
from hpi.cards import core_models
from hpi.cli.common import add_command, hpi_config_from_args, progress_printer
from hpi.device import parse_device
from hpi.pipelines.bench import bench_pipeline

DEFAULT_MODEL = "PP-LCNet_x1_0"
FORMATS = {"md": format_markdown, "csv": format_csv, "json": format_json}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi bench`` to the main parser's subcommands."""
    return add_command(subparsers, "bench", add_arguments, run,
                       help="latency table: normal vs high-performance mode, every candidate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hpi bench``."""
    parser.add_argument("--model",
                        help=f"model name (default {DEFAULT_MODEL}); built from the zoo if not in the store")
    parser.add_argument("--models", help="'core' (the nine core models of seed 002) or a comma-separated list")
    parser.add_argument("--model-dir", help="a PaddleX inference directory for --model")
    parser.add_argument("--pipeline", help="time a pipeline's stages instead (PP-ShiTuV2: detect, embed, search)")
    parser.add_argument("--index", help="with --pipeline: a saved index to search (default: built from the samples)")
    parser.add_argument("--gallery-size", type=int, help="with --pipeline: pad the index to this many vectors")
    parser.add_argument("--use-hpip", action="store_true",
                        help="with --pipeline: high-performance mode per sub-model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int_list, default=[1], help="e.g. 1,8")
    parser.add_argument("--threads", type=int_list, default=None, help="e.g. 1,2 (default: the machine's cores)")
    parser.add_argument("--format", choices=list(FORMATS), default="md")
    parser.add_argument("--output", help="also write the table to this file")
    parser.add_argument("--plot", help="write a latency and throughput chart (PNG)")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per candidate (after warm-up)")
    parser.add_argument("--fp32-only", action="store_true", help="no reduced-precision candidates")
    parser.add_argument("--gate-data", metavar="DIR",
                        help="images from the model's own domain that the accuracy gate also judges every candidate "
                             "on, besides the built-in photos")
    parser.add_argument("--no-stages", action="store_true", help="skip the decode/preprocess/inference split")
    parser.add_argument("--no-roofs", action="store_true",
                        help="skip measuring this CPU's matrix-multiply and memory roofs (the bound of a missed target)")
    parser.add_argument("--cache-dir")


def int_list(text: str) -> list[int]:
    """``--batch-sizes 1,8``: positive integers, comma-separated."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def model_names(args: argparse.Namespace) -> list[str]:
    """The models ``--models`` / ``--model`` name ("core": the nine core models)."""
    if args.models == "core":
        return [c.name for c in core_models()]
    if args.models:
        return [m.strip() for m in args.models.split(",") if m.strip()]
    return [args.model or DEFAULT_MODEL]


def run(args: argparse.Namespace) -> int:
    """Print the table (and write it to ``--output``, the chart to ``--plot``); progress goes to stderr."""
    if args.pipeline:
        text = bench_pipeline(args.pipeline, device=args.device, use_hpip=args.use_hpip, index=args.index,
                              gallery_size=args.gallery_size, budget_s=args.budget, cache_dir=args.cache_dir)
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        print(text)
        return 0
    show = progress_printer()
    benches = list(bench_models(model_names(args), parse_device(args.device), model_dir=args.model_dir,
                                progress=show, batch_sizes=args.batch_sizes, threads=args.threads or [None],
                                hpi_config=hpi_config_from_args(args), budget_s=args.budget,
                                stages=not args.no_stages, cache=EngineCache(args.cache_dir)))
    device = parse_device(args.device)
    peaks = None if args.no_roofs or device.is_gpu or args.format == "csv" else measure_peaks()
    text = format_csv(benches) if args.format == "csv" else FORMATS[args.format](benches, peaks=peaks)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        show(f"wrote {args.output}")
    print(text)
    if args.plot:
        show(f"wrote {plot(benches, args.plot)}")
    return 0
