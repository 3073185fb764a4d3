"""``hpi predict``: classify images with a model (or run a pipeline) and print PaddleX's result JSON."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hpi.api import create_model
from hpi.cli.common import add_command, hpi_config_from_args
from hpi.errors import InvalidConfigError
from hpi.pipelines import create_pipeline


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi predict`` to the main parser's subcommands."""
    return add_command(subparsers, "predict", add_arguments, run,
                       help="classify images (or run a pipeline) and print the results")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hpi predict``."""
    parser.add_argument("--model", help="PaddleX model name, e.g. PP-LCNet_x1_0")
    parser.add_argument("--model-dir", help="PaddleX inference directory (default: the local model store)")
    parser.add_argument("--pipeline", help="run a pipeline instead: image_classification, PP-ShiTuV2, or a YAML path")
    parser.add_argument("--input", required=True, help="image file, directory, or URL")
    parser.add_argument("--device", default=None, help="cpu, gpu or gpu:N (default: gpu:0 if present, else cpu)")
    parser.add_argument("--backend", help="force a backend: paddle, onnxruntime, openvino, tensorrt")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], help="with --backend: the precision")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the machine's cores)")
    parser.add_argument("--use-hpip", action="store_true", help="high-performance mode (measured backend selection)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--topk", type=int, default=None)
    parser.add_argument("--save-path", help="directory for result JSON and visualisations")
    parser.add_argument("--index", help="PP-ShiTuV2: a saved retrieval index directory (hpi.pipelines build_index)")


def run(args: argparse.Namespace) -> int:
    """Print every result as JSON (and save it with ``--save-path``)."""
    if args.pipeline:
        runner = create_pipeline(args.pipeline, device=args.device, use_hpip=args.use_hpip,
                                 hpi_config=hpi_config_from_args(args))
        kwargs = {"topk": args.topk} if args.topk else {}
        if args.index:
            kwargs["index"] = args.index
        results = runner.predict(args.input, **kwargs)
    else:
        if not args.model:
            raise InvalidConfigError("hpi predict: give --model NAME (and --model-dir DIR) or --pipeline NAME")
        runner = create_model(args.model, args.model_dir, device=args.device, use_hpip=args.use_hpip,
                              hpi_config=hpi_config_from_args(args))
        print(f"# {runner.model_name} on {runner.engine.describe()} ({runner.choice.reason})", file=sys.stderr)
        results = runner.predict(args.input, batch_size=args.batch_size, topk=args.topk)
    for res in results:
        res.print()
        if args.save_path:
            res.save_to_json(args.save_path)
            res.save_to_img(args.save_path)
    return 0
