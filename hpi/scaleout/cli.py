"""Command-line options of the scale-out paths: ``hpi export --format triton``, ``hpi batch``, ``hpi serve --engine
ray``. Parsing only; the work is in :mod:`hpi.scaleout.triton`, :mod:`~hpi.scaleout.ray_batch` and
:mod:`~hpi.scaleout.ray_serve`. Importing this module imports neither Ray nor tritonclient."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_export_options(parser: argparse.ArgumentParser) -> None:
    """``hpi export``'s Triton options (added to the existing export command)."""
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
    """``hpi export --format triton``."""
    from hpi.bench import resolve_source
    from hpi.cache import EngineCache
    from hpi.scaleout.triton import TritonExportOptions, export_triton_repository
    from hpi.select import HpiConfig

    if not args.output:
        raise SystemExit("hpi export --format triton: give --output REPO")
    show = _stderr_line
    source = resolve_source(args.model, args.model_dir, notify=show)
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


def _stderr_line(message: str) -> None:
    print(f"# {message}", file=sys.stderr)


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """``hpi serve``'s engine options (added to the existing serve command)."""
    g = parser.add_argument_group("engine")
    g.add_argument("--engine", choices=["uvicorn", "ray"], default="uvicorn",
                   help="uvicorn: one process (default); ray: Ray Serve replicas of the same app (RAY_ADDRESS, or "
                        "a local cluster on 127.0.0.1)")
    g.add_argument("--replicas", type=int, default=2, help="with --engine ray: replicas (default: 2)")
    g.add_argument("--cpus-per-replica", type=float, help="with --engine ray: CPUs (and engine threads) per "
                                                          "replica (default: the cluster's CPUs / replicas)")


def run_ray_serve(args: argparse.Namespace, settings: Any) -> int:
    """``hpi serve --engine ray``."""
    from hpi.scaleout.ray_serve import serve_forever

    serve_forever(args.pipeline, settings, host=args.host, port=args.port, replicas=args.replicas,
                  cpus_per_replica=args.cpus_per_replica)
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from hpi.scaleout.ray_batch import run_batch

    bar = _Bar()
    try:
        report = run_batch(args.model, args.input, args.output, model_dir=args.model_dir, use_hpip=args.use_hpip,
                           workers=args.workers, batch_size=args.batch_size, topk=args.topk,
                           cache_dir=args.cache_dir, progress=bar)
    finally:
        bar.close()
    print(f"{report.rows} image(s) -> {report.output} ({report.failed} failed) in {report.seconds:.1f} s: "
          f"{report.workers} worker(s) x {report.threads_per_worker} thread(s), {report.backend}")
    return 0 if report.failed == 0 else 1


class _Bar:
    """A tqdm bar on stderr when tqdm is installed (the bench extra), else a line per tenth."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            if done * 10 // total > self.shown or done == total:
                self.shown = done * 10 // total
                _stderr_line(f"{done}/{total} images")
            return
        if self.bar is None:
            self.bar = tqdm(total=total, unit="img", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def register_cli(subparsers: Any) -> None:
    """``hpi batch``."""
    p = subparsers.add_parser("batch", help="classify many images on Ray Data (local cluster or RAY_ADDRESS), "
                                            "results to parquet")
    p.add_argument("--model", required=True, help="model name (built from the zoo if not in the store)")
    p.add_argument("--model-dir", help="a PaddleX inference directory for --model (workers must read it)")
    p.add_argument("--input", required=True, help="a directory of images, a glob pattern, or a file")
    p.add_argument("--output", required=True, help="the parquet file to write")
    p.add_argument("--use-hpip", action="store_true", help="high-performance mode (measured once, here)")
    p.add_argument("--workers", type=int, help="Ray actors, each with its own model (default: cluster CPUs / 2)")
    p.add_argument("--batch-size", type=int, default=16, help="images per map_batches call (default: 16)")
    p.add_argument("--topk", type=int, help="classes per image (default: the model's)")
    p.add_argument("--cache-dir", help="the engine cache (default: $HPI_CACHE_DIR)")
    p.set_defaults(func=_cmd_batch)


__all__ = ["add_export_options", "add_serve_options", "register_cli", "run_ray_serve", "run_triton_export"]
