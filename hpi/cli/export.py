"""``hpi export``: build a model's engines ahead of time into the engine cache, and measure the selection."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from hpi.aot import prepare_engines
from hpi.cache import EngineCache
from hpi.cli.common import add_command, hpi_config_from_args, progress_printer
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
    g.add_argument("--max-batch-size", type=int, help="dynamic batching limit (default: 8)")
    g.add_argument("--instances", type=int,
                   help="engine instances; on CPU the cores are split evenly between them (default: 1)")
    g.add_argument("--target-cores", type=int, metavar="N",
                   help="CPU cores of the machine Triton will run on, split between the instances for their "
                        "threads (default: this machine's cores)")
    g.add_argument("--tuned", metavar="RECORD",
                   help="an hpi tune record (JSON, target triton): its instances, threads, max batch size, batching "
                        "delay and preferred batch sizes go into config.pbtxt")
    g.add_argument("--layout", choices=["hpi", "paddlex"], default="hpi",
                   help="hpi: engine + pre/post-processing + ensemble; paddlex: PaddleX's high-stability-serving "
                        "layout (one JSON model per endpoint)")
    g.add_argument("--engine-backend", choices=["onnxruntime", "openvino", "python"],
                   help="override the Triton backend the decision maps to (python: ONNX Runtime inside the Python "
                        "backend, for Triton builds without the onnxruntime backend, such as nvidia-pytriton's)")
    g.add_argument("--hpi-requirement", metavar="SPEC",
                   help="the requirement for hpi written into the repository's requirements.txt (a wheel path, "
                        "'hpi==X' from your index; default: where this hpi is installed from)")
    g.add_argument("--gpu-arch", metavar="CC",
                   help="with --device gpu on a machine without that GPU: its compute capability (e.g. 8.9); no "
                        "selection runs, the repository is written for that GPU (unverified here)")
    g.add_argument("--tensorrt-version", metavar="X.Y",
                   help="with --gpu-arch: the TensorRT of the Triton host; the engines are built on first load")
    g.add_argument("--gpu-precision", choices=["fp32", "fp16"], default="fp32",
                   help="with --gpu-arch: the engine precision (fp16 needs --tensorrt-version; default: fp32)")


def _triton_options(args: argparse.Namespace, model_name: str) -> Any:
    """The export options from the flags and, with --tuned, the tune record (a flag that contradicts it is refused)."""
    from hpi.errors import InvalidConfigError
    from hpi.scaleout.triton import TritonExportOptions, apply_tuned, read_tune_record

    options = TritonExportOptions(
        max_batch_size=args.max_batch_size or 8, instances=args.instances or 1, layout=args.layout,
        engine_backend=args.engine_backend, target_cores=args.target_cores, hpi_requirement=args.hpi_requirement)
    if not args.tuned:
        return options
    given = [flag for flag, value in (("--max-batch-size", args.max_batch_size), ("--instances", args.instances))
             if value is not None]
    if given:
        raise InvalidConfigError(f"{' and '.join(given)} with --tuned: the tune record sets them; drop "
                                 f"{'them' if len(given) > 1 else 'it'} or the record")
    return apply_tuned(options, read_tune_record(args.tuned), model_name)


def run_triton_export(args: argparse.Namespace) -> int:
    """``hpi export --format triton``: write the repository, then say how the decision maps onto Triton."""
    from hpi.errors import InvalidConfigError
    from hpi.scaleout.triton import GpuTarget, export_triton_repository

    if not args.output:
        raise InvalidConfigError("hpi export --format triton: give --output REPO")
    if args.backends:
        raise InvalidConfigError("--backends builds engines into the cache; it has no meaning with --format triton")
    if args.calibrate:
        raise InvalidConfigError("--calibrate with --format triton: the Triton export does not write int8 models "
                                 "(an int8 decision is exported as ONNX Runtime fp32), so calibration would not "
                                 "change the repository; drop --calibrate")
    gpu_flags = [f for f, v in (("--tensorrt-version", args.tensorrt_version),) if v]
    if gpu_flags and not args.gpu_arch:
        raise InvalidConfigError(f"{gpu_flags[0]} needs --gpu-arch (the compute capability of the Triton host's GPU)")
    show = progress_printer()
    source = locate_model(args.model, args.model_dir, build=True)
    options = _triton_options(args, source.name)
    target = (GpuTarget(args.gpu_arch, args.tensorrt_version, args.gpu_precision) if args.gpu_arch else None)
    if target is not None and not parse_device(args.device).is_gpu:
        raise InvalidConfigError(f"--gpu-arch writes a GPU repository: give --device gpu (not {args.device})")
    # --gate-data is honoured: the accuracy gate judges the candidates on it, which decides whether OpenVINO bf16
    # may be exported.
    repo = export_triton_repository(source, args.output, device=args.device, options=options,
                                    cache=EngineCache(args.cache_dir), hpi_config=hpi_config_from_args(args),
                                    gpu_target=target,
                                    progress=show)
    plan = repo.manifest["plan"]
    print(f"Triton repository for {source.name}: {repo.path}")
    print(f"  decision {plan['decision']} -> Triton {plan['backend']}[{plan['precision']}] {plan['kind']} "
          f"x{plan['instances']}" + (f", {plan['threads_per_instance']} thread(s) each"
                                     + (f" on {plan['cores']} cores" if plan.get("cores") else "")
                                     if plan["threads_per_instance"] else ""))
    for note in plan["notes"]:
        print(f"  note: {note}")
    if args.gate_data:
        print(f"  the accuracy gate judged gate_data {args.gate_data}")
    print(f"  models: {', '.join(repo.models)}; clients call {repo.entry_model}")
    print(f"  the server's Python environment needs: pip install -r {repo.path / 'requirements.txt'}")
    if plan["backend"] == "python" or args.layout == "paddlex":
        print(f"  local trial (nvidia-pytriton's server): python -m hpi triton serve {repo.path}")
    else:
        print(f"  needs a Triton with the {plan['backend']} backend (NVIDIA's Triton container); for a local trial "
              "on nvidia-pytriton's server export with --engine-backend python")
    return 0


def run(args: argparse.Namespace) -> int:
    """Print each engine built (or the selection's candidates and winner), then the cache entries of the model."""
    if args.format == "triton":
        return run_triton_export(args)
    device = parse_device(args.device)
    cache = EngineCache(args.cache_dir)
    show = progress_printer()
    source = locate_model(args.model, args.model_dir, build=True)
    config = hpi_config_from_args(args)
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
