"""``hpi eval``: top-1 / top-5 of normal and high-performance mode on a labelled dataset."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hpi.cli.common import add_command, hpi_config_from_args
from hpi.evaluate import evaluate


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi eval`` to the main parser's subcommands."""
    return add_command(subparsers, "eval", add_arguments, run,
                       help="top-1/top-5 of normal and high-performance mode on a labelled dataset")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hpi eval``."""
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-dir")
    parser.add_argument("--dataset", required=True, help="PaddleX classification layout: val.txt (+ label.txt)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--cache-dir")


def run(args: argparse.Namespace) -> int:
    """Print the report as a Markdown table (or JSON)."""
    report = evaluate(args.model, args.dataset, model_dir=args.model_dir, device=args.device,
                      hpi_config=hpi_config_from_args(args), batch_size=args.batch_size,
                      cache_dir=args.cache_dir)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"{report.model} on {args.dataset} ({report.samples} samples)")
    print("| mode | backend | top-1 | top-5 |\n|---|---|---|---|")
    for mode, r in (("normal", report.normal), ("high-performance", report.high_performance)):
        print(f"| {mode} | {r['backend']} | {r['top1']:.4f} | {r['top5']:.4f} |")
    print(f"top-1 agreement between the modes: {report.top1_agreement:.4f}")
    return 0
