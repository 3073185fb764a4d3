"""``export_triton_repository``: a model and hpi's measured decision written as a Triton model repository.

Steps: the decision (cached selection, or a stated :class:`~hpi.scaleout.triton.plan.GpuTarget` when the GPU is
not on this machine) -> the plan (:mod:`~hpi.scaleout.triton.plan`) -> the engine graph and its I/O
(:mod:`~hpi.scaleout.triton.graph`) -> the outputs the repository must give on the built-in photos -> the layout's
models (:mod:`~hpi.scaleout.triton.layouts`), ``requirements.txt`` and ``README.md``
(:mod:`~hpi.scaleout.triton.environment`), written atomically with the manifest last
(:func:`hpi.storage.write_directory`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpi.cache import EngineCache
from hpi.config import HpiConfig
from hpi.device import Device, parse_device
from hpi.errors import BackendUnavailableError, ExportError, HpiError, InvalidConfigError
from hpi.scaleout.triton.environment import REQUIREMENTS_FILE, readme_text, requirements_text
from hpi.scaleout.triton.graph import GraphIO, graph_io
from hpi.scaleout.triton.layouts import LayoutInput, LayoutWriter
from hpi.scaleout.triton.plan import (
    OPENVINO_TRAP,
    EnginePlan,
    GpuTarget,
    TritonExportOptions,
    plan_engine,
    plan_gpu_target,
)
from hpi.scaleout.triton.verify import MANIFEST_FILE
from hpi.selection.candidates import high_performance_config
from hpi.source import ModelSource
from hpi.version import __version__

MANIFEST_FORMAT = 2  # 2: requirements.txt instead of copied hpi sources; gpu_target; tuned_from


@dataclass(frozen=True)
class TritonRepository:
    """A written repository: where, which models, which model a client calls, and the manifest."""

    path: Path
    models: tuple[str, ...]
    entry_model: str  # the model clients call: NAME_ensemble, or image-classification (paddlex layout)
    manifest: Mapping[str, Any] = field(repr=False)


def export_triton_repository(
    source: ModelSource,
    output: str | os.PathLike[str],
    *,
    device: str | Device | None = "cpu",
    options: TritonExportOptions | None = None,
    hpi_config: HpiConfig | Mapping[str, Any] | None = None,
    cache: EngineCache | None = None,
    record: Any = None,
    gpu_target: GpuTarget | None = None,
    progress: Callable[[str], None] | None = None,
) -> TritonRepository:
    """Write a Triton model repository for a classification model, following hpi's measured decision.

    Args:
        source: the model (a PaddleX inference directory or ONNX + inference.yml).
        output: the repository directory; written to a sibling temporary directory and renamed into place. An
            existing hpi repository there is replaced; any other non-empty directory is refused.
        device: where Triton will run the engine (``cpu`` or ``gpu:N``).
        options: layout, batching, instances, the deployment machine's cores, engine backend.
        hpi_config: the selection policy (threads, reduced precision, gate data), as for ``create_model``.
        cache: the engine cache (default: ``$HPI_CACHE_DIR``).
        record: a :class:`hpi.selection.SelectionRecord` to use; default: the cached decision (measured if absent).
        gpu_target: with a ``gpu`` device: the GPU the repository is for, when this machine has none; no
            selection runs, the plan follows the target (:func:`~hpi.scaleout.triton.plan.plan_gpu_target`).
        progress: called with a line per step.

    Returns:
        The written repository.

    Raises:
        InvalidConfigError: a GPU target for a CPU device, or gate data / calibration data with a GPU target
            (nothing is measured or gated for it).

    Example:
        >>> repo = export_triton_repository(ModelSource.from_path("PP-LCNet_x1_0_infer"), "models/")
        >>> repo.entry_model
        'PP-LCNet_x1_0_ensemble'
    """
    from hpi.selection.decision import cached_selection
    from hpi.storage import write_directory

    options = options or TritonExportOptions()
    dev = parse_device(device)
    cfg = HpiConfig.from_dict(hpi_config)
    cache = cache or EngineCache()
    say = progress or (lambda _msg: None)
    if source.spec.task != "classification" or source.spec.preprocess is None:
        raise ExportError(f"{source.name} is a {source.spec.task} model; Triton export supports classification models")
    if gpu_target is not None:
        if not dev.is_gpu:
            raise InvalidConfigError(f"gpu_target is for GPU repositories, but the device is {dev}")
        if cfg.gate_data or cfg.calibration_data:
            raise InvalidConfigError("gate_data / calibration_data with a stated GPU target: no selection and no "
                                     "accuracy gate run for a GPU that is not on this machine")
        record = None
        plan = plan_gpu_target(gpu_target, options)
    else:
        if record is None:
            say(f"selection for {source.name} on {dev} (cached when measured before)")
            try:
                record = cached_selection(source, dev, cfg, cache=cache, batch_size=1,
                                          progress=lambda s: say(f"measuring {s}"))
            except HpiError as exc:
                if not dev.is_gpu:
                    raise
                raise BackendUnavailableError(f"{exc}; to write a GPU repository on a machine without that GPU, "
                                              "state it: "
                                "gpu_target=GpuTarget(compute_capability=..., tensorrt_version=...) "
                                "(hpi export --gpu-arch 8.9 --tensorrt-version 10.13)") from exc
        bf16_ok = any(r.candidate.backend == "openvino" and r.candidate.precision == "bf16"
                      and r.status in ("winner", "passed") for r in record.results)
        plan = plan_engine(record.winner.candidate, dev, options, bf16_accepted=bf16_ok)
    if options.tuned_from:
        plan = dataclasses.replace(plan, notes=(*plan.notes, f"batching, instances and threads from the tune record "
                                                                f"{options.tuned_from}"))
    onnx_file, folded = _engine_graph(source, cache, cfg, plan)
    io = graph_io(onnx_file)
    labels = _labels(source, io)
    topk = source.spec.topk.topk if source.spec.topk else 5
    say(f"expected outputs on the built-in photos (ONNX Runtime fp32, {'folded' if folded else 'unfolded'} graph)")
    expected = expected_outputs(source, cache, cfg)
    trt_cache = None
    if plan.tensorrt:
        arch = f"-sm{gpu_target.compute_capability.replace('.', '')}" if gpu_target else ""
        trt_cache = f"{options.trt_cache_dir}/{source.name}-{source.content_hash[:12]}{arch}"
    given = LayoutInput(source, plan, options, io, folded, tuple(labels), topk, onnx_file, trt_cache)
    python_engine = options.layout == "paddlex" or plan.backend == "python"

    out = Path(output).expanduser().resolve()
    written: dict[str, Any] = {}

    def keep_existing(existing: Path) -> bool:
        if not (existing / MANIFEST_FILE).is_file() and (not existing.is_dir() or any(existing.iterdir())):
            raise ExportError(f"{existing} exists and is not an hpi Triton repository (no {MANIFEST_FILE}); "
                              "choose an empty or new directory")
        return False  # an earlier hpi repository: replaced as a whole

    def fill(staging: Path) -> dict[str, Any]:
        writer = LayoutWriter(staging, given)
        models, entry = writer.write_paddlex() if options.layout == "paddlex" else writer.write_hpi()
        written.update(models=models, entry=entry)
        (staging / REQUIREMENTS_FILE).write_text(requirements_text(
            needs_onnxruntime=python_engine, needs_serve=options.layout == "paddlex",
            hpi_line=options.hpi_requirement), encoding="utf-8")
        (staging / "README.md").write_text(readme_text(
            entry_model=entry, models=models, engine_backend="python" if python_engine else plan.backend,
            gpu=plan.kind == "KIND_GPU"), encoding="utf-8")
        return {
            "format": MANIFEST_FORMAT,
            "hpi_version": __version__,
            "model_name": source.name,
            "model_hash": source.content_hash,
            "weights": _weights(source),
            "layout": options.layout,
            "entry_model": entry,
            "models": list(models),
            "device": str(dev),
            "plan": plan.to_dict(),
            "gpu_target": gpu_target.to_dict() if gpu_target else None,
            "tuned_from": options.tuned_from,
            "openvino_fp32_trap": OPENVINO_TRAP,
            "preprocess_folded": folded,
            "graph": dataclasses.asdict(io),
            "topk": topk,
            "selection": record.to_dict() if record is not None else None,
            "expected": {"engine": "onnxruntime[fp32] on CPU", "tolerance": _tolerance(plan), "results": expected},
        }

    # One atomic, locked directory write; the manifest (with every file's size and sha256) is written last.
    write_directory(out, fill, manifest=MANIFEST_FILE, keep_existing=keep_existing)
    manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    models, entry = written["models"], written["entry"]
    say(f"wrote {out} ({', '.join(models)})")
    return TritonRepository(out, tuple(models), entry, manifest)


def _tolerance(plan: EnginePlan) -> str:
    if plan.precision == "fp32" and plan.kind == "KIND_CPU":
        return "class ids exact, scores within 1e-5"
    return f"{plan.precision} on {plan.kind}: the same top-1 class; scores differ by the precision"


def _weights(source: ModelSource) -> str:
    from hpi.zoo.store import weights_kind

    return weights_kind(source.directory) or "user"


def _engine_graph(source: ModelSource, cache: EngineCache, cfg: HpiConfig, plan: EnginePlan) -> tuple[Path, bool]:
    """The ONNX graph to export: folded (uint8 NHWC input) where high-performance mode folds for the backend that
    runs the engine (OpenVINO for an openvino engine, else ONNX Runtime: the python engine runs it too), under the
    user's hpi_config: the one fold decision, :func:`hpi.selection.candidates.high_performance_config`."""
    from hpi.artefacts.onnx import folded_onnx_path, onnx_path

    runs_on = "openvino" if plan.backend == "openvino" else "onnxruntime"
    if high_performance_config(runs_on, {}, source, cfg).get("fold_preprocess"):
        return folded_onnx_path(source, cache), True
    return onnx_path(source, cache), False


def _labels(source: ModelSource, io: GraphIO) -> list[str]:
    classes = io.output_dims[-1] if io.output_dims else -1
    names = source.spec.topk.label_list if source.spec.topk else None
    if names is None:
        if classes < 1:
            raise ExportError(f"{source.name}: the graph's class count is dynamic and inference.yml has no label_list")
        return [str(i) for i in range(classes)]
    if classes != -1 and len(names) != classes:
        raise ExportError(f"{source.name}: PostProcess.Topk.label_list has {len(names)} names but the graph's output "
                          f"{io.output_name!r} has {classes} classes")
    return list(names)


def expected_outputs(source: ModelSource, cache: EngineCache, cfg: HpiConfig) -> list[dict[str, Any]]:
    """``predict()`` on the built-in photos with the exported graph on ONNX Runtime fp32: what a deployment of the
    repository must answer (class ids, scores rounded as predict() rounds them, label names)."""
    from hpi.api import create_model
    from hpi.selection.measure import SAMPLE_IMAGES

    # The repository's models decode at full size, so its expected outputs do too (no reduced-scale decoding).
    config = {"backend": "onnxruntime", "threads": cfg.threads, "fold_preprocess": cfg.fold_preprocess,
              "reduced_decode": False}
    paths = sorted(SAMPLE_IMAGES.glob("*.jpg"))
    with create_model(source.name, source.directory, device="cpu", use_hpip=True, hpi_config=config,
                      cache_dir=cache.root) as model:
        return [{"image": Path(res["input_path"]).name, "class_ids": res["class_ids"], "scores": res["scores"],
                 "label_names": res["label_names"]} for res in model.predict([str(p) for p in paths])]
