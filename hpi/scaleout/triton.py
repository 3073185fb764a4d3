"""Triton Inference Server model repositories from a model and hpi's measured decision (``hpi export --format triton``).

Layout ``hpi`` (the default), for a model ``NAME``::

    REPO/hpi_manifest.json          hpi version, model hash, the selection record, the Triton plan and why, the
                                    expected outputs on the built-in photos, sha256 of every file
    REPO/NAME/config.pbtxt          the engine: dynamic batching, instance groups, threads, accelerators
    REPO/NAME/1/model.onnx          the exported graph (normalisation folded in where high-performance mode folds:
                                    uint8 NHWC input)
    REPO/NAME_preprocess/           Python model: encoded image bytes -> the engine's input (hpi's decoder + resize)
    REPO/NAME_postprocess/          Python model: scores -> CLASS_IDS, SCORES, LABEL_NAMES (top-k, as predict())
    REPO/NAME_ensemble/             the three chained: IMAGE (bytes) in, predict()'s top-k out

Layout ``paddlex``: PaddleX's high-stability-serving layout, one Python model per endpoint
(``image-classification``) taking and returning the JSON bodies of PaddleX's serving protocol, so PaddleX's
``paddlex_hps_client`` works against Triton unchanged.

How the decision maps onto Triton (recorded in the manifest, with the reason):

* ONNX Runtime fp32 -> the ``onnxruntime`` backend. Paddle decisions -> ``onnxruntime`` fp32 too: Triton has no
  maintained Paddle backend, and the fp32 backends agree within the accuracy gate.
* OpenVINO: Triton's OpenVINO backend has no way to force fp32 (only a bf16 hint), and on CPUs with AMX the CPU
  plugin runs bf16 by default. An fp32 OpenVINO decision is therefore exported for ``onnxruntime`` fp32; only a
  bf16 decision (the gate accepted bf16) is exported for the ``openvino`` backend.
* GPU: ``KIND_GPU`` instances on ONNX Runtime; when the decision chose fp16 (or TensorRT), the ONNX Runtime
  TensorRT accelerator with ``precision_mode`` FP16 and an engine cache. Unverified here (no GPU).
* ``engine_backend="python"``: the engine as a Python model running ONNX Runtime, for Triton builds with only the
  Python backend (the ``nvidia-pytriton`` wheel's server); same graph, same numbers as ``onnxruntime`` on CPU.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hpi.cache import EngineCache
from hpi.config import HpiConfig
from hpi.device import Device, cpu_count, parse_device
from hpi.errors import BackendUnavailableError, ExportError, InvalidConfigError
from hpi.selection.choice import BackendChoice, fold_preprocessing
from hpi.source import ModelSource
from hpi.version import __version__

logger = logging.getLogger(__name__)

MANIFEST_FILE = "hpi_manifest.json"
MANIFEST_FORMAT = 1
PYTHON_SOURCES = Path(__file__).parent / "triton_python"
# hpi's own modules the Python models import (decoder, preprocessing spec and kernels), copied beside them; the
# package's __init__ needs device.py (it applies HPI_MAX_CPU_ISA on import).
HPI_SUBSET = ("__init__.py", "version.py", "errors.py", "device.py", "preprocess/__init__.py", "preprocess/decode.py",
              "preprocess/fused.py", "preprocess/graph.py", "preprocess/reference.py", "preprocess/spec.py")
PADDLEX_CLASSIFY_MODEL = "image-classification"  # PaddleX's hps endpoint name (deploy/hps/sdk/pipelines/...)
ENGINE_BACKENDS = ("onnxruntime", "openvino", "python")
OPENVINO_TRAP = (
    "Triton's OpenVINO backend cannot force fp32 inference (it only has a bf16 hint) and OpenVINO's CPU plugin "
    "runs bf16 by default on CPUs with AMX / AVX512-BF16; an fp32 decision is therefore never exported for the "
    "openvino backend, only a bf16 decision that passed the accuracy gate")

_ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64",
                   10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}


@dataclass(frozen=True)
class TritonExportOptions:
    """How to lay out the repository; every default is resolved in :func:`plan_engine`."""

    max_batch_size: int = 8  # dynamic batching up to this many images per engine call
    instances: int = 1  # engine instances; on CPU the cores are split evenly between them
    layout: Literal["hpi", "paddlex"] = "hpi"
    engine_backend: str | None = None  # onnxruntime | openvino | python; None: follow the decision
    threads: int | None = None  # CPU cores the engine instances share; None: this machine's
    max_queue_delay_us: int = 2000  # how long Triton waits to fill a batch (hpi serve's window is 2 ms)
    trt_cache_dir: str = "/tmp/hpi-trt-cache"  # on the Triton host: the TensorRT engine cache of GPU exports

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise InvalidConfigError(f"max_batch_size: expected a positive integer, got {self.max_batch_size!r}")
        if not isinstance(self.instances, int) or self.instances < 1:
            raise InvalidConfigError(f"instances: expected a positive integer, got {self.instances!r}")
        if self.layout not in ("hpi", "paddlex"):
            raise InvalidConfigError(f"layout: expected 'hpi' or 'paddlex', got {self.layout!r}")
        if self.engine_backend is not None and self.engine_backend not in ENGINE_BACKENDS:
            raise InvalidConfigError(f"engine_backend: expected one of {ENGINE_BACKENDS}, got {self.engine_backend!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise InvalidConfigError(f"threads: expected a positive integer, got {self.threads!r}")


@dataclass(frozen=True)
class EnginePlan:
    """What the decision becomes on Triton, and why."""

    backend: str  # Triton backend of the engine model: onnxruntime, openvino or python
    precision: str  # fp32, fp16 or bf16
    kind: Literal["KIND_CPU", "KIND_GPU"]
    instances: int
    threads_per_instance: int | None  # CPU only; instances x threads == the cores
    tensorrt: bool  # GPU: ONNX Runtime's TensorRT accelerator
    decision: str  # the selection winner's label, e.g. openvino[bf16]
    notes: tuple[str, ...] = ()  # why the plan differs from the decision, and known traps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TritonRepository:
    """A written repository: where, which models, which model a client calls, and the manifest."""

    path: Path
    models: tuple[str, ...]
    entry_model: str  # the model clients call: NAME_ensemble, or image-classification (paddlex layout)
    manifest: Mapping[str, Any] = field(repr=False)


def plan_engine(decision: Any, device: Device, options: TritonExportOptions, *,
                bf16_accepted: bool = False) -> EnginePlan:
    """Map the selection winner (:class:`hpi.selection.Candidate`) to a Triton engine.

    Args:
        decision: the winning candidate (backend, precision, config).
        device: where Triton will run the engine (``KIND_GPU`` for a GPU).
        options: the export options (``engine_backend`` overrides the mapping, within the OpenVINO rule).
        bf16_accepted: whether an OpenVINO bf16 candidate passed the accuracy gate.

    Raises:
        InvalidConfigError: OpenVINO asked for without a bf16 decision (the trap), or instances that do not
            divide the cores.
    """
    label = f"{decision.backend}{'+trt' if decision.config.get('use_tensorrt') else ''}[{decision.precision}]"
    notes: list[str] = []
    if device.is_gpu:
        tensorrt = decision.precision == "fp16" or decision.backend == "tensorrt" or bool(
            decision.config.get("use_tensorrt"))
        precision = "fp16" if decision.precision == "fp16" else "fp32"
        backend = options.engine_backend or "onnxruntime"
        if backend != "onnxruntime":
            raise InvalidConfigError(f"engine_backend {backend!r} on {device}: GPU exports use the onnxruntime backend")
        if decision.backend != "onnxruntime" or tensorrt:
            notes.append(f"decision {label} exported as ONNX Runtime on the GPU"
                         + (f" with its TensorRT accelerator ({precision.upper()}, engine cache)" if tensorrt else ""))
        notes.append("GPU export unverified: written against Triton's onnxruntime backend documentation, not run")
        return EnginePlan(backend, precision, "KIND_GPU", options.instances, None, tensorrt, label, tuple(notes))

    cores = options.threads or cpu_count()
    if cores % options.instances:
        divisors = [n for n in range(1, cores + 1) if cores % n == 0]
        raise InvalidConfigError(
            f"instances={options.instances} cannot share {cores} cores evenly; use one of {divisors} "
            "(or set threads)")
    per_instance = cores // options.instances
    if decision.backend == "openvino" and decision.precision == "bf16":
        backend, precision = "openvino", "bf16"
        notes.append("OpenVINO bf16 decision: exported for Triton's openvino backend, whose CPU plugin runs bf16 by "
                     "default on this CPU class (unverified here: the openvino backend is not in the test server)")
    else:
        backend, precision = "onnxruntime", "fp32"
        if decision.precision == "int8":
            notes.append(f"decision {label} exported for ONNX Runtime fp32: the Triton export does not write int8 "
                         "models")
        elif decision.backend == "openvino":
            notes.append(f"decision {label} exported for ONNX Runtime fp32: {OPENVINO_TRAP}")
        elif decision.backend == "paddle":
            notes.append(f"decision {label} exported for ONNX Runtime fp32: Triton has no maintained Paddle backend")
    if options.engine_backend == "openvino" and backend != "openvino":
        if not bf16_accepted:
            raise InvalidConfigError(f"engine_backend 'openvino' refused for decision {label}: {OPENVINO_TRAP}")
        backend, precision = "openvino", "bf16"
        notes.append("openvino requested: the accuracy gate accepted OpenVINO bf16 for this model")
    elif options.engine_backend == "onnxruntime" and backend != "onnxruntime":
        backend, precision = "onnxruntime", "fp32"
        notes.append("onnxruntime requested instead of the decision's backend")
    elif options.engine_backend == "python":
        backend, precision = "python", "fp32"
        notes.append("engine as a Python-backend model running ONNX Runtime fp32 (for Triton builds with only the "
                     "Python backend)")
    return EnginePlan(backend, precision, "KIND_CPU", options.instances, per_instance, False, label, tuple(notes))


# ----------------------------------------------------------------------------------------------- config.pbtxt


class _Enum(str):
    """A protobuf enum value: written without quotes."""


def to_pbtxt(message: Mapping[str, Any], indent: int = 0) -> str:
    """A mapping as protobuf text format: nested mappings are messages, lists of mappings repeated messages (map
    fields are lists of ``{"key", "value"}``), lists of scalars repeated scalars, :class:`_Enum` bare words."""
    pad = "  " * indent
    lines: list[str] = []

    def scalar(value: Any) -> str:
        if isinstance(value, _Enum):
            return str(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        return json.dumps(str(value))

    for key, value in message.items():
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            lines += [f"{pad}{key} {{\n{to_pbtxt(v, indent + 1)}{pad}}}" for v in value]
        elif isinstance(value, (list, tuple)):
            lines.append(f"{pad}{key}: [ {', '.join(scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _params(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"string_value": str(v)}} for k, v in values.items()]


def _tensor(name: str, dtype: str, dims: Sequence[int]) -> dict[str, Any]:
    return {"name": name, "data_type": _Enum(dtype), "dims": list(dims)}


@dataclass(frozen=True)
class _GraphIO:
    """The exported graph's one input and one output, as Triton sees them (batch dimension dropped)."""

    input_name: str
    input_type: str
    input_dims: tuple[int, ...]
    output_name: str
    output_type: str
    output_dims: tuple[int, ...]


def graph_io(onnx_file: Path) -> _GraphIO:
    """Names, Triton dtypes and dims (without the batch axis; -1 where dynamic) of an ONNX classifier.

    Raises:
        ExportError: not one input and one output, a fixed batch dimension, or a dtype Triton has no name for.
    """
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ExportError(f"{onnx_file}: expected one input and one output, got {len(inputs)} and {len(graph.output)}")

    def describe(value: Any) -> tuple[str, tuple[int, ...]]:
        ttype = value.type.tensor_type
        if ttype.elem_type not in _ONNX_TO_TRITON:
            raise ExportError(f"{onnx_file}: tensor {value.name!r} has ONNX type {ttype.elem_type}, which Triton lacks")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
        if not dims or dims[0] != -1:
            raise ExportError(f"{onnx_file}: tensor {value.name!r} has a fixed batch dimension {dims[:1]}; "
                              "dynamic batching needs a dynamic one")
        return _ONNX_TO_TRITON[ttype.elem_type], tuple(dims[1:])

    in_type, in_dims = describe(inputs[0])
    out_type, out_dims = describe(graph.output[0])
    return _GraphIO(inputs[0].name, in_type, in_dims, graph.output[0].name, out_type, out_dims)


# ----------------------------------------------------------------------------------------------- the writer


def export_triton_repository(
    source: ModelSource,
    output: str | os.PathLike[str],
    *,
    device: str | Device | None = "cpu",
    options: TritonExportOptions | None = None,
    hpi_config: HpiConfig | Mapping[str, Any] | None = None,
    cache: EngineCache | None = None,
    record: Any = None,
    progress: Callable[[str], None] | None = None,
) -> TritonRepository:
    """Write a Triton model repository for a classification model, following hpi's measured decision.

    Args:
        source: the model (a PaddleX inference directory or ONNX + inference.yml).
        output: the repository directory; written to a sibling temporary directory and renamed into place. An
            existing hpi repository there is replaced; any other non-empty directory is refused.
        device: where Triton will run the engine (``cpu`` or ``gpu:N``).
        options: layout, batching, instances, engine backend.
        hpi_config: the selection policy (threads, reduced precision, gate), as for ``create_model``.
        cache: the engine cache (default: ``$HPI_CACHE_DIR``).
        record: a :class:`hpi.selection.SelectionRecord` to use; default: the cached decision (measured if absent).
        progress: called with a line per step.

    Returns:
        The written repository.

    Example:
        >>> repo = export_triton_repository(ModelSource.from_path("PP-LCNet_x1_0_infer"), "models/")
        >>> repo.entry_model
        'PP-LCNet_x1_0_ensemble'
    """
    from hpi.selection.decision import cached_selection

    options = options or TritonExportOptions()
    dev = parse_device(device)
    cfg = HpiConfig.from_dict(hpi_config)
    cache = cache or EngineCache()
    say = progress or (lambda _msg: None)
    if source.spec.task != "classification" or source.spec.preprocess is None:
        raise ExportError(f"{source.name} is a {source.spec.task} model; Triton export supports classification models")
    if record is None:
        say(f"selection for {source.name} on {dev} (cached when measured before)")
        record = cached_selection(source, dev, cfg, cache=cache, batch_size=1,
                                  progress=lambda s: say(f"measuring {s}"))
    bf16_ok = any(r.candidate.backend == "openvino" and r.candidate.precision == "bf16"
                  and r.status in ("winner", "passed") for r in record.results)
    plan = plan_engine(record.winner.candidate, dev, options, bf16_accepted=bf16_ok)
    onnx_file, folded = _engine_graph(source, cache, cfg)
    io = graph_io(onnx_file)
    labels = _labels(source, io)
    topk = source.spec.topk.topk if source.spec.topk else 5
    say(f"expected outputs on the built-in photos (ONNX Runtime fp32, {'folded' if folded else 'unfolded'} graph)")
    expected = expected_outputs(source, cache, cfg)

    from hpi.storage import write_directory

    out = Path(output).expanduser().resolve()
    written: dict[str, Any] = {}

    def keep_existing(existing: Path) -> bool:
        if not (existing / MANIFEST_FILE).is_file() and (not existing.is_dir() or any(existing.iterdir())):
            raise ExportError(f"{existing} exists and is not an hpi Triton repository (no {MANIFEST_FILE}); "
                              "choose an empty or new directory")
        return False  # an earlier hpi repository: replaced as a whole

    def fill(staging: Path) -> dict[str, Any]:
        writer = _Writer(staging, source, plan, options, io, folded, labels, topk, onnx_file)
        models, entry = writer.write_paddlex() if options.layout == "paddlex" else writer.write_hpi()
        written.update(models=models, entry=entry)
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
            "openvino_fp32_trap": OPENVINO_TRAP,
            "preprocess_folded": folded,
            "graph": dataclasses.asdict(io),
            "topk": topk,
            "selection": record.to_dict(),
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


def _engine_graph(source: ModelSource, cache: EngineCache, cfg: HpiConfig) -> tuple[Path, bool]:
    """The ONNX graph to export: folded (uint8 NHWC input) where high-performance mode folds for ONNX Runtime."""
    from hpi.artefacts.onnx import folded_onnx_path, onnx_path
    from hpi.backends import get_backend

    config = get_backend("onnxruntime").make_config({})
    choice = fold_preprocessing(BackendChoice("onnxruntime", config, "triton export", "explicit"), source, cfg)
    if choice.config.fold_preprocess:
        return folded_onnx_path(source, cache), True
    return onnx_path(source, cache), False


def _labels(source: ModelSource, io: _GraphIO) -> list[str]:
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
    from hpi.models.classification import create_model
    from hpi.selection.measure import SAMPLE_IMAGES

    config = {"backend": "onnxruntime", "threads": cfg.threads, "fold_preprocess": cfg.fold_preprocess}
    paths = sorted(SAMPLE_IMAGES.glob("*.jpg"))
    with create_model(source.name, source.directory, device="cpu", use_hpip=True, hpi_config=config,
                      cache_dir=cache.root) as model:
        return [{"image": Path(res["input_path"]).name, "class_ids": res["class_ids"], "scores": res["scores"],
                 "label_names": res["label_names"]} for res in model.predict([str(p) for p in paths])]


def verify_repository(path: str | os.PathLike[str]) -> list[str]:
    """Compare a repository's files with its manifest; returns the problems (empty when it is intact)."""
    from hpi.storage import file_sha256

    root = Path(path)
    manifest = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
    actual = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
    actual.pop(MANIFEST_FILE, None)
    problems = [f"{name}: missing" for name in manifest["files"] if name not in actual]
    problems += [f"{name}: changed" for name, record in manifest["files"].items()
                 if name in actual and file_sha256(actual[name]) != record["sha256"]]
    problems += [f"{name}: not in the manifest" for name in actual if name not in manifest["files"]]
    return problems


class _Writer:
    """Writes the models of one repository into a staging directory."""

    def __init__(self, root: Path, source: ModelSource, plan: EnginePlan, options: TritonExportOptions,
                 io: _GraphIO, folded: bool, labels: list[str], topk: int, onnx_file: Path) -> None:
        self.root, self.source, self.plan, self.options = root, source, plan, options
        self.io, self.folded, self.labels, self.topk, self.onnx_file = io, folded, labels, topk, onnx_file
        self.name = source.name

    def _preprocess_params(self) -> dict[str, Any]:
        spec = self.source.spec.preprocess
        return {"transform_ops": json.dumps(spec.to_transform_ops()), "folded": "1" if self.folded else "0",
                "output_name": self.io.input_name, "preprocess_threads": self.options.threads or cpu_count()}

    def _input_dims(self) -> list[int]:
        """The engine input's dims, with sizes the preprocessing fixes filled in where the graph leaves them open."""
        dims = list(self.io.input_dims)
        width, height = self.source.spec.preprocess.output_size or (-1, -1)
        want = [height, width, 3] if self.folded else [3, height, width]
        return [d if d != -1 else w for d, w in zip(dims, want)] if len(dims) == 3 else dims

    def _config(self, model: str, message: Mapping[str, Any]) -> None:
        directory = self.root / model
        (directory / "1").mkdir(parents=True, exist_ok=True)
        (directory / "config.pbtxt").write_text(to_pbtxt({"name": model, **message}), encoding="utf-8")

    def _python_model(self, model: str, source_file: str, extra: Sequence[str] = ()) -> Path:
        """Copy a Python model, the shared runtime and hpi's preprocessing subset into ``model/1/``."""
        version = self.root / model / "1"
        version.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PYTHON_SOURCES / source_file, version / "model.py")
        shutil.copyfile(PYTHON_SOURCES / "runtime.py", version / "runtime.py")
        hpi_root = Path(inspect.getfile(ModelSource)).parent
        for rel in HPI_SUBSET:
            (version / "hpi" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(hpi_root / rel, version / "hpi" / rel)
        for name in extra:
            (version / name).write_text(_GENERATED[name](), encoding="utf-8")
        return version

    def _instance_groups(self) -> list[dict[str, Any]]:
        group: dict[str, Any] = {"count": self.plan.instances, "kind": _Enum(self.plan.kind)}
        if self.plan.kind == "KIND_GPU":
            group["gpus"] = [0]
        return [group]

    def write_hpi(self) -> tuple[list[str], str]:
        name, io, opts = self.name, self.io, self.options
        engine_in = _tensor(io.input_name, io.input_type, self._input_dims())
        engine_out = _tensor(io.output_name, io.output_type, [len(self.labels)])
        batching = {"max_queue_delay_microseconds": opts.max_queue_delay_us}
        self._write_engine(engine_in, engine_out, batching)

        pre = f"{name}_preprocess"
        self._config(pre, {
            "backend": "python", "max_batch_size": opts.max_batch_size,
            "input": [_tensor("IMAGE", "TYPE_STRING", [1])], "output": [engine_in],
            "dynamic_batching": batching, "instance_group": [{"count": 1, "kind": _Enum("KIND_CPU")}],
            "parameters": _params(self._preprocess_params()),
        })
        self._python_model(pre, "preprocess_model.py")

        post = f"{name}_postprocess"
        k = min(self.topk, len(self.labels))
        outputs = [_tensor("CLASS_IDS", "TYPE_INT64", [k]), _tensor("SCORES", "TYPE_FP32", [k]),
                   _tensor("LABEL_NAMES", "TYPE_STRING", [k])]
        self._config(post, {
            "backend": "python", "max_batch_size": opts.max_batch_size, "input": [engine_out], "output": outputs,
            "dynamic_batching": batching, "instance_group": [{"count": 1, "kind": _Enum("KIND_CPU")}],
            "parameters": _params({"input_name": io.output_name, "topk": k}),
        })
        version = self._python_model(post, "postprocess_model.py")
        (version / "labels.json").write_text(json.dumps(self.labels, ensure_ascii=False), encoding="utf-8")

        ensemble = f"{name}_ensemble"

        def step(model: str, inputs: Mapping[str, str], outputs_: Mapping[str, str]) -> dict[str, Any]:
            return {"model_name": model, "model_version": -1,
                    "input_map": [{"key": k_, "value": v} for k_, v in inputs.items()],
                    "output_map": [{"key": k_, "value": v} for k_, v in outputs_.items()]}

        self._config(ensemble, {
            "platform": "ensemble", "max_batch_size": opts.max_batch_size,
            "input": [_tensor("IMAGE", "TYPE_STRING", [1])], "output": outputs,
            "ensemble_scheduling": {"step": [
                step(pre, {"IMAGE": "IMAGE"}, {io.input_name: "pixels"}),
                step(name, {io.input_name: "pixels"}, {io.output_name: "class_scores"}),
                step(post, {io.output_name: "class_scores"}, {t["name"]: t["name"] for t in outputs}),
            ]},
        })
        return [name, pre, post, ensemble], ensemble

    def _write_engine(self, engine_in: dict[str, Any], engine_out: dict[str, Any], batching: dict[str, Any]) -> None:
        plan, opts = self.plan, self.options
        message: dict[str, Any] = {"backend": plan.backend, "max_batch_size": opts.max_batch_size,
                                   "input": [engine_in], "output": [engine_out], "dynamic_batching": batching,
                                   "instance_group": self._instance_groups()}
        version = self.root / self.name / "1"
        version.mkdir(parents=True, exist_ok=True)
        threads = plan.threads_per_instance
        if plan.backend == "onnxruntime":
            message["default_model_filename"] = "model.onnx"
            if threads:
                message["parameters"] = _params({"intra_op_thread_count": threads, "inter_op_thread_count": 1})
            if plan.tensorrt:
                trt = {"precision_mode": plan.precision.upper(), "trt_engine_cache_enable": "1",
                       "trt_engine_cache_path": f"{opts.trt_cache_dir}/{self.name}-{self.source.content_hash[:12]}"}
                message["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [
                    {"name": "tensorrt", "parameters": [{"key": k, "value": v} for k, v in trt.items()]}]}}
            shutil.copyfile(self.onnx_file, version / "model.onnx")
        elif plan.backend == "python":
            message["parameters"] = _params({"intra_op_thread_count": threads})
            shutil.copyfile(self.onnx_file, version / "model.onnx")
            self._python_model(self.name, "engine_model.py")
        elif plan.backend == "openvino":
            # No precision parameter: the backend cannot force one, and bf16 is the CPU plugin's default here.
            message["parameters"] = _params({"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1})
            _write_openvino_ir(self.onnx_file, version)
        else:
            raise ExportError(f"no Triton engine writer for backend {plan.backend!r}")
        self._config(self.name, message)

    def write_paddlex(self) -> tuple[list[str], str]:
        model = PADDLEX_CLASSIFY_MODEL
        threads = self.plan.threads_per_instance or (self.options.threads or cpu_count())
        params = {**self._preprocess_params(), "preprocess_threads": 1, "intra_op_thread_count": threads,
                  "topk": self.topk}
        # PaddleX's hps configs: backend python, max_batch_size 1, input "input" and output "output" (TYPE_STRING).
        self._config(model, {
            "backend": "python", "max_batch_size": 1,
            "input": [_tensor("input", "TYPE_STRING", [1])], "output": [_tensor("output", "TYPE_STRING", [1])],
            "instance_group": [{"count": self.plan.instances, "kind": _Enum("KIND_CPU")}],
            "parameters": _params(params),
        })
        version = self._python_model(model, "paddlex_classify_model.py", extra=("hpi_draw.py",))
        shutil.copyfile(self.onnx_file, version / "model.onnx")
        (version / "labels.json").write_text(json.dumps(self.labels, ensure_ascii=False), encoding="utf-8")
        return [model], model


def _write_openvino_ir(onnx_file: Path, version: Path) -> None:
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError("exporting for Triton's openvino backend needs openvino: "
                                      "pip install 'hpi[openvino]'") from exc
    try:
        ov.save_model(ov.convert_model(str(onnx_file)), str(version / "model.xml"), compress_to_fp16=False)
    except Exception as exc:  # openvino raises RuntimeError / OpConversionFailure with a useful message
        raise ExportError(f"OpenVINO could not convert {onnx_file}: {exc}") from exc


def _draw_module() -> str:
    """hpi serve's visualisation function, copied so the PaddleX layout draws results exactly as hpi serve does."""
    try:
        from hpi.serving.classification import draw_labels_jpeg
    except ImportError as exc:
        raise BackendUnavailableError(f"the paddlex layout copies hpi serve's visualisation, which needs the serve "
                                      f"extra ({exc.name} is missing): pip install 'hpi[serve]'") from exc
    return ('"""hpi serve\'s classification visualisation (hpi.serving.classification), copied by hpi export."""\n\n'
            "from __future__ import annotations\n\nimport base64\n\nimport cv2\nimport numpy as np  # noqa: F401\n\n"
            "from hpi.errors import HpiInternalError\n\n\n" + inspect.getsource(draw_labels_jpeg))


_GENERATED: dict[str, Callable[[], str]] = {"hpi_draw.py": _draw_module}

__all__ = ["MANIFEST_FILE", "EnginePlan", "TritonExportOptions", "TritonRepository", "export_triton_repository",
           "graph_io", "plan_engine", "to_pbtxt", "verify_repository"]
