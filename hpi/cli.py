"""The ``hpi`` command: argument parsing over library functions, nothing more."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from hpi.errors import HpiError


def _cmd_predict(args: argparse.Namespace) -> int:
    if args.pipeline:
        from hpi.pipelines import create_pipeline

        runner = create_pipeline(args.pipeline, device=args.device, use_hpip=args.use_hpip,
                                 hpi_config=_hpi_config(args))
        kwargs = {"topk": args.topk} if args.topk else {}
        if args.index:
            kwargs["index"] = args.index
        results = runner.predict(args.input, **kwargs)
    else:
        if not args.model:
            raise SystemExit("hpi predict: give --model NAME (and --model-dir DIR) or --pipeline NAME")
        from hpi.predictor import create_model

        runner = create_model(args.model, args.model_dir, device=args.device, use_hpip=args.use_hpip,
                              hpi_config=_hpi_config(args))
        print(f"# {runner.model_name} on {runner.engine.describe()} ({runner.choice.reason})", file=sys.stderr)
        results = runner.predict(args.input, batch_size=args.batch_size, topk=args.topk)
    for res in results:
        res.print()
        if args.save_path:
            res.save_to_json(args.save_path)
            res.save_to_img(args.save_path)
    return 0


def _hpi_config(args: argparse.Namespace) -> dict:
    cfg: dict = {}
    if args.backend:
        cfg["backend"] = args.backend
    if getattr(args, "precision", None):
        cfg["backend_config"] = {"precision": args.precision}
    if getattr(args, "threads", None):
        cfg["threads"] = args.threads
    return cfg


def _cmd_cache(args: argparse.Namespace) -> int:
    from hpi.cache import EngineCache

    cache = EngineCache(args.cache_dir)
    if args.action == "clear":
        n = cache.clear(args.kind)
        print(f"removed {n} entr{'y' if n == 1 else 'ies'} from {cache.root}")
        return 0
    entries = cache.entries()
    print(f"engine cache: {cache.root} ({len(entries)} entries)")
    for e in entries:
        what = e.parts.get("model") or e.parts.get("onnx") or e.parts.get("ir") or ""
        print(f"{e.kind:16} {e.key}  {e.size_bytes / 1e6:8.2f} MB  {str(what)[:16]}")
    return 0


def _cmd_backends(args: argparse.Namespace) -> int:
    from hpi.backends.base import available_backends, get_backend
    from hpi.device import parse_device

    device = parse_device(args.device)
    for name, reason in available_backends(device).items():
        backend = get_backend(name)
        status = "available" if reason is None else f"unavailable: {reason}"
        version = backend.version() if reason is None else "-"
        precisions = ",".join(backend.precisions(device)) if reason is None else "-"
        print(f"{name:12} {status:60} version={version} precisions={precisions}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from hpi import __version__

    parser = argparse.ArgumentParser(prog="hpi", description="High-performance inference for PaddleX vision models")
    parser.add_argument("--version", action="version", version=f"hpi {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: info logs, -vv: debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="classify images (or run a pipeline) and print the results")
    p.add_argument("--model", help="PaddleX model name, e.g. PP-LCNet_x1_0")
    p.add_argument("--model-dir", help="PaddleX inference directory (default: the local model store)")
    p.add_argument("--pipeline", help="run a pipeline instead: image_classification, PP-ShiTuV2, or a YAML path")
    p.add_argument("--input", required=True, help="image file, directory, or URL")
    p.add_argument("--device", default=None, help="cpu, gpu or gpu:N (default: gpu:0 if present, else cpu)")
    p.add_argument("--backend", help="force a backend: paddle, onnxruntime, openvino, tensorrt")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], help="with --backend: the precision")
    p.add_argument("--threads", type=int, help="CPU threads (default: the machine's cores)")
    p.add_argument("--use-hpip", action="store_true", help="high-performance mode (measured backend selection)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--topk", type=int, default=None)
    p.add_argument("--save-path", help="directory for result JSON and visualisations")
    p.add_argument("--index", help="PP-ShiTuV2: a saved retrieval index directory (hpi.pipelines build_index)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("cache", help="list or clear the engine cache")
    p.add_argument("action", choices=["list", "clear"])
    p.add_argument("--kind", help="with clear: only entries of this kind (onnx, openvino, tensorrt, decision, ...)")
    p.add_argument("--cache-dir", help="default: $HPI_CACHE_DIR or the platform cache directory")
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("backends", help="which backends can run here, and why not")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_backends)

    for module in _SUBCOMMAND_MODULES:
        __import__(module, fromlist=["register_cli"]).register_cli(sub)
    return parser


# Modules that add their own subcommands with register_cli(subparsers).
_SUBCOMMAND_MODULES = ("hpi.bench", "hpi.cards", "hpi.pipelines.cli", "hpi.serving.cli", "hpi.zoo.cli",
                       "hpi.scaleout.cli")


def main(argv: Sequence[str] | None = None) -> int:
    # Paddle's import-time notices are not the user's concern on the command line.
    warnings.filterwarnings("ignore", message="No ccache found")
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ logs: warnings and up
    try:
        return int(args.func(args) or 0)
    except HpiError as exc:
        print(f"hpi: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `hpi models | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
