"""``hpi export``: build a model's engines ahead of time into the engine cache, and measure the selection."""

from __future__ import annotations

import argparse
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
                       help="build every engine ahead of time and run selection")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hpi export``."""
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-dir")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backends", help="only build these (comma-separated); no selection")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--fp32-only", action="store_true")
    parser.add_argument("--cache-dir")


def run(args: argparse.Namespace) -> int:
    """Print each engine built (or the selection's candidates and winner), then the cache entries of the model."""
    device = parse_device(args.device)
    cache = EngineCache(args.cache_dir)
    show = progress_printer()
    source = locate_model(args.model, args.model_dir, build=True)
    config = HpiConfig(threads=args.threads, allow_reduced_precision=not args.fp32_only)
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
    print(f"engine cache: {cache.root}")
    for e in prepared.entries:
        print(f"  {e.kind:16} {e.size_bytes / 1e6:9.2f} MB  {e.path}")
    return 0
