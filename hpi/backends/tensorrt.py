"""Native TensorRT: plans built from the model's ONNX export with TensorRT's Python API, run through cuda-python.

A plan is built once per (ONNX content, TensorRT version, GPU name and compute capability, precision, batch
profile, builder settings) and kept in the engine cache (kind ``tensorrt``); :func:`build_plan` builds one
without the cache, for export code that prepares plans ahead of time.

Precision lives in the ONNX graph, not in builder flags. TensorRT 11 removed the weakly typed precision flags
(``BuilderFlag.FP16`` and the others): every network is strongly typed and runs in the types its tensors carry.
An fp16 plan is therefore built from a copy of the ONNX model converted to fp16 with ``onnxconverter-common``
(inputs and outputs stay fp32, so callers feed and receive float32 either way). TensorRT 10 gets the same
strongly typed network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), so both versions build the same thing.

Runtime: one execution context and one CUDA stream per engine; device buffers and pinned host staging buffers
per I/O tensor, grown only when a larger batch arrives; ``execute_async_v3`` on the stream, then a synchronise.

The pip wheels ``tensorrt-cu12-bindings`` + ``tensorrt-cu12-libs`` install the module ``tensorrt_bindings``; the
``tensorrt-cu12`` frontend package re-exports it as ``tensorrt``. Either is accepted.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hpi.backends.base import Backend, BackendConfig, Capabilities, Engine, register_backend
from hpi.cache import EngineCache
from hpi.device import Device, cuda_device_count, device_signature
from hpi.errors import (
    BackendUnavailableError,
    ExportError,
    InferenceError,
    InvalidConfigError,
    InvalidInputError,
)
from hpi.export import onnx_path
from hpi.model import ModelSource

logger = logging.getLogger(__name__)

PLAN_FILE = "model.plan"
BUILD_INFO_FILE = "build.json"
TIMING_CACHE_KIND = ".tensorrt-timing"  # dot-named: mutable, never listed as an engine-cache entry
INSTALL_HINT = "pip install tensorrt-cu12-bindings tensorrt-cu12-libs"
TENSORRT_MISSING = f"tensorrt is not installed ({INSTALL_HINT})"
CUDA_PYTHON_MISSING = "cuda-python is not installed (pip install 'cuda-python>=12.6,<13' for CUDA 12 drivers)"
ONNX_MISSING = "onnx is not installed (pip install onnx)"
FP16_CONVERTER_MISSING = (
    "fp16 plans are built from an fp16 copy of the ONNX model (TensorRT 11 networks are strongly typed); "
    "that conversion needs onnxconverter-common: pip install onnxconverter-common"
)
NO_DEVICE = "no CUDA device"
FP16_MAX = 65504.0  # largest finite fp16: weights beyond it are clamped, none below it is


# --------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TensorRtConfig(BackendConfig):
    """Settings of a native TensorRT plan. Every field but ``timing_cache`` is part of the plan's cache key."""

    precision: Literal["fp32", "fp16"] = "fp32"  # fp16: built from an fp16 copy of the ONNX model, fp32 I/O
    min_batch: int = 1  # optimisation profile on the batch dim: smallest batch the plan accepts
    opt_batch: int = 1  # the batch TensorRT tunes kernels for
    max_batch: int = 8  # largest batch the plan accepts
    workspace_mb: int = 1024  # builder workspace memory pool limit
    optimization_level: int = 3  # IBuilderConfig.builder_optimization_level, 0 (fast build) .. 5 (slow, faster plan)
    timing_cache: bool = True  # reuse kernel timings across builds on the same GPU and TensorRT version
    tf32: bool = False  # fp32 only: allow TF32 tensor cores (Ampere+; about 1e-3 relative error, faster)

    ALIASES = {"max_batch_size": "max_batch", "trt_max_batch_size": "max_batch"}

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.precision not in ("fp32", "fp16"):
            raise InvalidConfigError(f"{name}.precision: expected 'fp32' or 'fp16', got {self.precision!r}")
        super().__post_init__()
        for key in ("min_batch", "opt_batch", "max_batch", "workspace_mb"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfigError(f"{name}.{key}: expected a positive integer, got {value!r}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            bad = "min_batch" if self.min_batch > self.opt_batch else "opt_batch"
            raise InvalidConfigError(
                f"{name}.{bad}: the batch profile needs min_batch <= opt_batch <= max_batch, got "
                f"min_batch={self.min_batch}, opt_batch={self.opt_batch}, max_batch={self.max_batch}"
            )
        level = self.optimization_level
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 5:
            raise InvalidConfigError(f"{name}.optimization_level: expected an integer from 0 to 5, got {level!r}")
        for key in ("timing_cache", "tf32"):
            if not isinstance(getattr(self, key), bool):
                raise InvalidConfigError(f"{name}.{key}: expected true or false, got {getattr(self, key)!r}")
        if self.tf32 and self.precision != "fp32":
            raise InvalidConfigError(f"{name}.tf32: only meaningful with precision 'fp32', got {self.precision!r}")


# ------------------------------------------------------------------------------------- optional imports


def _module_available(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (a missing parent package counts as missing)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def tensorrt_installed() -> bool:
    return _module_available("tensorrt") or _module_available("tensorrt_bindings")


def cuda_python_installed() -> bool:
    return _module_available("cuda.bindings") or _module_available("cuda.cudart")


def import_tensorrt() -> Any:
    """The TensorRT Python module (``tensorrt``, or ``tensorrt_bindings`` from the bindings wheel alone)."""
    name = "tensorrt" if _module_available("tensorrt") else "tensorrt_bindings"
    if not _module_available(name):
        raise BackendUnavailableError(TENSORRT_MISSING)
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # the bindings are there but libnvinfer & co. are not
        raise BackendUnavailableError(
            f"tensorrt is installed but does not import ({exc}); its libraries come with tensorrt-cu12-libs: "
            f"{INSTALL_HINT}"
        ) from exc


def import_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime`` from 12.6 on, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as exc:
            raise BackendUnavailableError(CUDA_PYTHON_MISSING) from exc
    return cudart


def _trt_major(trt: Any) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 0


# ------------------------------------------------------------------------------------------------ CUDA


def cuda_error_text(cudart: Any, err: Any) -> str:
    """``cudaErrorX (description)`` for a cudaError_t."""
    name = getattr(err, "name", None) or f"error {int(err)}"
    try:
        ok, text = cudart.cudaGetErrorString(err)
        if int(ok) == 0 and text:
            return f"{name} ({text.decode() if isinstance(text, bytes) else text})"
    except Exception:  # noqa: BLE001 - describing an error must never raise another one
        pass
    return name


def cuda_call(cudart: Any, result: Any, what: str, error: type[Exception] = InferenceError) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple: the value(s) on success, ``error`` naming ``what`` else."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise error(f"{what} failed: {cuda_error_text(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _no_device_reason(device: Device, count: int) -> str:
    if count > 0:
        return f"{NO_DEVICE} {device} ({count} visible)"
    try:
        cudart = import_cudart()
        err, _ = cudart.cudaGetDeviceCount()
    except Exception:  # noqa: BLE001 - the detail is optional
        return NO_DEVICE
    if int(err) == 0:
        return NO_DEVICE
    detail = f"cudaGetDeviceCount: {getattr(err, 'name', int(err))}"
    if getattr(err, "name", "") == "cudaErrorInsufficientDriver":
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            detail += (
                f"; no NVIDIA driver is loaded, or it is older than cuda-python "
                f"{importlib.metadata.version('cuda-python')} needs"
            )
    return f"{NO_DEVICE} ({detail})"


# ----------------------------------------------------------------------------------------- TRT logging


class _LogRelay:
    """Forwards TensorRT's log to :mod:`logging` and keeps its last errors for exception messages."""

    def __init__(self, trt: Any) -> None:
        severity = trt.ILogger.Severity
        self.levels = {
            severity.INTERNAL_ERROR: logging.ERROR,
            severity.ERROR: logging.ERROR,
            severity.WARNING: logging.WARNING,
            severity.INFO: logging.DEBUG,
            severity.VERBOSE: logging.DEBUG,
        }
        self.errors: collections.deque[str] = collections.deque(maxlen=8)
        relay = self

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, sev: Any, msg: str) -> None:
                level = relay.levels.get(sev, logging.INFO)
                if level >= logging.ERROR:
                    relay.errors.append(str(msg))
                logger.log(level, "TensorRT: %s", msg)

        self.trt_logger = _Logger()

    def recent_errors(self) -> str:
        return "; ".join(self.errors) if self.errors else "no error was logged"


_RELAYS: dict[int, _LogRelay] = {}


def _relay(trt: Any) -> _LogRelay:
    """One logger per TensorRT module for the whole process: TensorRT requires it to outlive every object."""
    if id(trt) not in _RELAYS:
        _RELAYS[id(trt)] = _LogRelay(trt)
    return _RELAYS[id(trt)]


# ---------------------------------------------------------------------------------- ONNX and profiles


@dataclass(frozen=True)
class InputProfile:
    """The optimisation-profile shapes of one network input."""

    name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]

    @property
    def dynamic_batch(self) -> bool:
        return self.min_shape[0] != self.max_shape[0]


def onnx_inputs(model: Any) -> list[tuple[str, list[int | None]]]:
    """The real inputs (initializers excluded) of an ONNX model or file: name and dims, None where symbolic."""
    if isinstance(model, str | os.PathLike):
        try:
            import onnx
        except ImportError as exc:
            raise BackendUnavailableError(ONNX_MISSING) from exc
        model = onnx.load(str(model), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        out.append((value.name, [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]))
    return out


def input_profiles(model: Any, config: TensorRtConfig,
                   input_dims: Mapping[str, Sequence[int | None]] | None = None) -> list[InputProfile]:
    """One profile per input: the batch dim from ``config``, every other dim fixed by the model or ``input_dims``.

    Args:
        model: an ONNX ``ModelProto`` or the path of an ONNX file.
        config: gives ``min_batch``/``opt_batch``/``max_batch`` for inputs whose first dim is dynamic.
        input_dims: full shapes (None or -1 for the batch) for inputs whose other dims are dynamic in the model.

    Example:
        >>> input_profiles("model.onnx", TensorRtConfig(max_batch=4))
        [InputProfile(name='x', min_shape=(1, 3, 224, 224), opt_shape=(1, 3, 224, 224), max_shape=(4, 3, 224, 224))]
    """
    given = {k: [None if d is None or d < 0 else int(d) for d in v] for k, v in (input_dims or {}).items()}
    inputs = onnx_inputs(model)
    unknown = sorted(set(given) - {name for name, _ in inputs})
    if unknown:
        raise ExportError(f"input_dims names {unknown}, but the model's inputs are {[n for n, _ in inputs]}")
    profiles = []
    for name, dims in inputs:
        if not dims:
            raise ExportError(f"input {name!r} is a scalar; TensorRT plans here need a batch dim first")
        if name in given:
            override = given[name]
            if len(override) != len(dims) or any(
                d is not None and o is not None and d != o for d, o in zip(dims[1:], override[1:])
            ):
                raise ExportError(f"input_dims[{name!r}] = {override} does not fit the model's shape {_show(dims)}")
            dims = [dims[0], *[d if d is not None else o for d, o in zip(dims[1:], override[1:])]]
        rest = dims[1:]
        if any(d is None for d in rest):
            raise ExportError(
                f"input {name!r} has shape {_show(dims)}: only the batch dim may be dynamic in a TensorRT profile; "
                f"pass input_dims={{{name!r}: [None, ...]}} with the other dims fixed"
            )
        fixed = tuple(int(d) for d in rest)  # type: ignore[arg-type]
        if dims[0] is None:
            batches = (config.min_batch, config.opt_batch, config.max_batch)
        else:
            batches = (dims[0],) * 3
            if (config.min_batch, config.max_batch) != (dims[0], dims[0]):
                logger.info("input %r has a fixed batch of %d in the ONNX model: the plan serves only that batch "
                            "(export with a dynamic batch dim to use min_batch/max_batch)", name, dims[0])
        profiles.append(InputProfile(name, *((b, *fixed) for b in batches)))
    if not profiles:
        raise ExportError("the ONNX model has no inputs")
    return profiles


def _show(dims: Sequence[int | None]) -> list[int | str]:
    return ["?" if d is None else d for d in dims]


def convert_to_fp16(model: Any) -> Any:
    """An fp16 copy of an ONNX model for a strongly typed fp16 plan; graph inputs and outputs stay fp32.

    Ops that onnxconverter-common knows to be unsafe in fp16 keep fp32 behind Cast nodes. Weights are clamped to
    the fp16 range (65504) rather than to the converter's default of 1e4.
    """
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise BackendUnavailableError(FP16_CONVERTER_MISSING) from exc
    try:
        return float16.convert_float_to_float16(model, keep_io_types=True, max_finite_val=FP16_MAX)
    except Exception as exc:  # the converter raises plain exceptions on graphs it cannot type
        raise ExportError(f"converting the ONNX model to fp16 failed: {exc}") from exc


def fp16_converter_version() -> str | None:
    try:
        return importlib.metadata.version("onnxconverter-common")
    except importlib.metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------- building


@contextlib.contextmanager
def _locked(path: Path) -> Any:
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=600):
        yield


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def timing_cache_file(cache: EngineCache, tensorrt_version: str, device_sig: str) -> Path:
    """Where the timing cache for one TensorRT version and GPU lives (mutable, shared by every model's build)."""
    return cache.root / TIMING_CACHE_KIND / f"{tensorrt_version}-{device_sig}" / "timing.cache"


def build_plan(onnx_file: str | os.PathLike, config: TensorRtConfig | None = None, *,
               input_dims: Mapping[str, Sequence[int | None]] | None = None,
               timing_cache_path: str | os.PathLike | None = None, device_index: int = 0) -> bytes:
    """Build a serialized TensorRT plan from an ONNX file (no engine cache involved).

    Needs a CUDA device: TensorRT's builder times kernels on the GPU it builds for.

    Args:
        onnx_file: the fp32 ONNX model; for ``precision="fp16"`` an fp16 copy is made in memory.
        config: precision, batch profile and builder settings (defaults: fp32, batch 1..8).
        input_dims: full shapes for inputs with dynamic dims other than the batch (see :func:`input_profiles`).
        timing_cache_path: a timing-cache file to read and update (created if missing); None: no timing cache.
        device_index: the CUDA device to build for.

    Example:
        >>> plan = build_plan("model.onnx", TensorRtConfig(precision="fp16", max_batch=16))
        >>> Path("model.plan").write_bytes(plan)
    """
    config = config or TensorRtConfig()
    trt = import_tensorrt()
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailableError(ONNX_MISSING) from exc
    onnx_file = Path(onnx_file)
    if not onnx_file.is_file():
        raise ExportError(f"ONNX file {onnx_file} does not exist")
    profiles = input_profiles(onnx_file, config, input_dims)
    model_bytes: bytes | None = None
    if config.precision == "fp16":
        model_bytes = convert_to_fp16(onnx.load(str(onnx_file))).SerializeToString()

    cudart = import_cudart()
    cuda_call(cudart, cudart.cudaSetDevice(device_index), f"cudaSetDevice({device_index})", BackendUnavailableError)
    relay = _relay(trt)
    relay.errors.clear()
    try:
        builder = trt.Builder(relay.trt_logger)
    except Exception as exc:  # pybind raises TypeError when createInferBuilder returns null (no usable GPU)
        raise BackendUnavailableError(
            f"TensorRT could not create a builder: {exc}; TensorRT said: {relay.recent_errors()}"
        ) from exc
    flags = 0
    if _trt_major(trt) < 11 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # TensorRT 11: always strongly typed
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, relay.trt_logger)
    parsed = parser.parse(model_bytes, str(onnx_file)) if model_bytes else parser.parse_from_file(str(onnx_file))
    if not parsed:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or relay.recent_errors()
        raise ExportError(f"TensorRT could not parse {onnx_file}: {errors}")
    network_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    if network_inputs != {p.name for p in profiles}:
        raise ExportError(f"TensorRT's network inputs {sorted(network_inputs)} differ from the ONNX inputs "
                          f"{[p.name for p in profiles]} of {onnx_file}")

    build_config = builder.create_builder_config()
    build_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    build_config.builder_optimization_level = config.optimization_level
    if not config.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        build_config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, p.min_shape, p.opt_shape, p.max_shape)
    build_config.add_optimization_profile(profile)

    timing_path = Path(timing_cache_path) if timing_cache_path is not None else None
    if timing_path is not None:
        with _locked(timing_path):
            previous = timing_path.read_bytes() if timing_path.is_file() else b""
        timing = build_config.create_timing_cache(previous)
        if not build_config.set_timing_cache(timing, False):
            logger.warning("TensorRT rejected the timing cache %s; building without it", timing_path)
            timing_path = None

    started = time.perf_counter()
    plan = builder.build_serialized_network(network, build_config)
    if plan is None:
        raise ExportError(f"TensorRT could not build a plan for {onnx_file} ({config.precision}, "
                          f"batch {config.min_batch}..{config.max_batch}): {relay.recent_errors()}")
    logger.info("built a TensorRT %s plan for %s in %.1f s", config.precision, onnx_file.name,
                time.perf_counter() - started)
    if timing_path is not None:
        _save_timing_cache(build_config, timing_path)
    return bytes(memoryview(plan))


def _save_timing_cache(build_config: Any, path: Path) -> None:
    """Merge this build's timings into the shared file under its lock (another build may have written it)."""
    ours = build_config.get_timing_cache()
    with _locked(path):
        if path.is_file():
            merged = build_config.create_timing_cache(path.read_bytes())
            merged.combine(ours, False)
            data = merged.serialize()
        else:
            data = ours.serialize()
        _write_atomic(path, bytes(memoryview(data)))


def plan_cache_parts(onnx_hash: str, tensorrt_version: str, device_sig: str, config: TensorRtConfig,
                     profiles: Sequence[InputProfile]) -> dict[str, Any]:
    """Everything that determines a plan: the engine-cache key parts (never a path)."""
    parts: dict[str, Any] = {
        "onnx": onnx_hash,
        "tensorrt": tensorrt_version,
        "device": device_sig,
        "precision": config.precision,
        "profile": [[p.name, list(p.min_shape), list(p.opt_shape), list(p.max_shape)] for p in profiles],
        "workspace_mb": config.workspace_mb,
        "optimization_level": config.optimization_level,
        "tf32": config.tf32,
    }
    if config.precision == "fp16":
        parts["fp16_converter"] = fp16_converter_version()
    return parts


def _spec_input_dims(source: ModelSource, inputs: list[tuple[str, list[int | None]]]) -> dict | None:
    """Fill a single image input's dynamic height and width from ``inference.yml`` (its crop or resize size)."""
    spec = source.spec.preprocess
    if len(inputs) != 1 or spec is None or spec.output_size is None:
        return None
    name, dims = inputs[0]
    if len(dims) != 4 or all(d is not None for d in dims[1:]):
        return None
    w, h = spec.output_size
    if spec.channels_first:
        return {name: [None, dims[1] or 3, h, w]}
    return {name: [None, h, w, dims[3] or 3]}


def plan_path(source: ModelSource, cache: EngineCache, device: Device, config: TensorRtConfig) -> Path:
    """The cached plan for ``source`` on ``device``, exporting the ONNX model and building the plan if missing."""
    trt = import_tensorrt()
    onnx_file = onnx_path(source, cache)
    onnx_hash = source.content_hash if source.format == "onnx" else onnx_file.parent.name
    input_dims = _spec_input_dims(source, onnx_inputs(onnx_file))
    profiles = input_profiles(onnx_file, config, input_dims)
    sig = device_signature(device)
    parts = plan_cache_parts(onnx_hash, trt.__version__, sig, config, profiles)
    timing = timing_cache_file(cache, trt.__version__, sig) if config.timing_cache else None

    def build(out: Path) -> None:
        logger.info("building a TensorRT %s plan for %s on %s (batch %d..%d); this can take minutes",
                    config.precision, source.name, device, config.min_batch, config.max_batch)
        plan = build_plan(onnx_file, config, input_dims=input_dims, timing_cache_path=timing,
                          device_index=device.index)
        (out / PLAN_FILE).write_bytes(plan)
        (out / BUILD_INFO_FILE).write_text(json.dumps({"model": source.name, **parts}, indent=2), encoding="utf-8")

    return cache.get_or_build("tensorrt", parts, build) / PLAN_FILE


# -------------------------------------------------------------------------------------------- runtime


@dataclass
class _Buffer:
    """One I/O tensor's device memory and its pinned host staging area, both ``nbytes`` long."""

    device_ptr: int
    host_ptr: int
    nbytes: int
    host: np.ndarray  # uint8 view of the pinned memory


class TensorRtEngine(Engine):
    config: TensorRtConfig

    def _load(self) -> None:
        self._buffers: dict[str, _Buffer] = {}
        self._stream: Any = None
        self._context = self._engine = self._runtime = None
        self.input_names, self.output_names, self.input_shapes, self.input_dtypes = [], [], {}, {}
        try:
            self._open()
        except BaseException:
            if hasattr(self, "_cudart"):
                self._close()
            raise

    def _open(self) -> None:
        trt = import_tensorrt()
        cudart = import_cudart()
        self._cudart = cudart
        cuda_call(cudart, cudart.cudaSetDevice(self.device.index), f"cudaSetDevice({self.device.index})",
                  BackendUnavailableError)
        plan_file = plan_path(self.source, self.cache, self.device, self.config)
        relay = _relay(trt)
        self._runtime = trt.Runtime(relay.trt_logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan_file.read_bytes())
        if self._engine is None:
            raise BackendUnavailableError(
                f"TensorRT could not load the plan {plan_file}: {relay.recent_errors()}; "
                f"remove that cache entry to rebuild it"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailableError(f"TensorRT could not create an execution context: {relay.recent_errors()}")
        self._dtypes: dict[str, np.dtype] = {}
        self._batch_range: dict[str, tuple[int, int]] = {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            trt_dtype = self._engine.get_tensor_dtype(name)
            try:
                self._dtypes[name] = np.dtype(trt.nptype(trt_dtype))
            except TypeError as exc:
                raise BackendUnavailableError(f"tensor {name!r} has TensorRT type {trt_dtype}, which numpy "
                                              f"cannot hold") from exc
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.input_names.append(name)
                shape = list(self._engine.get_tensor_shape(name))
                self.input_shapes[name] = [d if d >= 0 else None for d in shape]
                self.input_dtypes[name] = self._dtypes[name]
                low, _, high = self._engine.get_tensor_profile_shape(name, 0)
                self._batch_range[name] = (int(low[0]), int(high[0]))
            else:
                self.output_names.append(name)
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate", BackendUnavailableError)
        logger.info("tensorrt %s plan for %s loaded on %s (inputs %s)", self.config.precision, self.source.name,
                    self.device, {n: self._batch_range[n] for n in self.input_names})

    def _ensure_buffer(self, name: str, nbytes: int) -> _Buffer:
        """The buffers of ``name``, reallocated only when ``nbytes`` exceeds what they hold."""
        buf = self._buffers.get(name)
        if buf is not None and buf.nbytes >= nbytes:
            return buf
        if buf is not None:
            self._free(buf)
            del self._buffers[name]
        cudart, size = self._cudart, max(nbytes, 1)
        device_ptr = cuda_call(cudart, cudart.cudaMalloc(size), f"cudaMalloc({size}) for {name!r}")
        try:
            host_ptr = cuda_call(cudart, cudart.cudaMallocHost(size), f"cudaMallocHost({size}) for {name!r}")
        except InferenceError:
            cudart.cudaFree(device_ptr)
            raise
        host = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(int(host_ptr)))
        buf = _Buffer(int(device_ptr), int(host_ptr), size, host)
        self._buffers[name] = buf
        return buf

    def _free(self, buf: _Buffer) -> None:
        buf.host = np.empty(0, np.uint8)  # drop the view before the memory under it goes
        self._cudart.cudaFreeHost(buf.host_ptr)
        self._cudart.cudaFree(buf.device_ptr)

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        cudart, context, stream = self._cudart, self._context, self._stream
        cuda_call(cudart, cudart.cudaSetDevice(self.device.index), "cudaSetDevice")
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.input_names:
            array = feed[name]
            low, high = self._batch_range[name]
            if not low <= array.shape[0] <= high:
                raise InvalidInputError(
                    f"input {name!r}: batch {array.shape[0]} is outside this plan's profile {low}..{high}; "
                    f"rebuild with TensorRtConfig(min_batch=..., max_batch=...) to cover it"
                )
            if not context.set_input_shape(name, tuple(array.shape)):
                raise InvalidInputError(f"input {name!r}: TensorRT rejected shape {list(array.shape)}")
            buf = self._ensure_buffer(name, array.nbytes)
            buf.host[: array.nbytes] = array.reshape(-1).view(np.uint8)
            cuda_call(cudart, cudart.cudaMemcpyAsync(buf.device_ptr, buf.host_ptr, array.nbytes, h2d, stream),
                      f"copying {name!r} to the GPU")
            context.set_tensor_address(name, buf.device_ptr)
        shapes = {}
        for name in self.output_names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise InferenceError(f"output {name!r} has a data-dependent shape {list(shape)}; not supported")
            shapes[name] = shape
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize
            context.set_tensor_address(name, self._ensure_buffer(name, nbytes).device_ptr)
        if not context.execute_async_v3(int(stream)):
            raise InferenceError(f"{self.describe()}: execute_async_v3 failed: {_relay_errors()}")
        outputs = []
        for name in self.output_names:
            buf, shape = self._buffers[name], shapes[name]
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize
            cuda_call(cudart, cudart.cudaMemcpyAsync(buf.host_ptr, buf.device_ptr, nbytes, d2h, stream),
                      f"copying {name!r} from the GPU")
            outputs.append((buf, nbytes, shape, self._dtypes[name]))
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return [buf.host[:nbytes].view(dtype).reshape(shape).copy() for buf, nbytes, shape, dtype in outputs]

    def _close(self) -> None:
        for buf in self._buffers.values():
            self._free(buf)
        self._buffers.clear()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        # Release order matters to TensorRT: the context before its engine, the engine before its runtime.
        self._context = None
        self._engine = None
        self._runtime = None


def _relay_errors() -> str:
    return "; ".join(r.recent_errors() for r in _RELAYS.values()) or "no error was logged"


# -------------------------------------------------------------------------------------------- backend


class TensorRtBackend(Backend):
    name = "tensorrt"
    capabilities = Capabilities(
        devices=frozenset({"gpu"}),
        precisions={"gpu": ("fp32", "fp16")},
        dynamic_batch=True,
        model_formats=frozenset({"onnx"}),
    )
    config_class = TensorRtConfig
    engine_class = TensorRtEngine

    def _device_reason(self, device: Device) -> str | None:
        if not tensorrt_installed():
            return TENSORRT_MISSING
        if not cuda_python_installed():
            return CUDA_PYTHON_MISSING
        if not _module_available("onnx"):
            return ONNX_MISSING
        count = cuda_device_count()
        if count <= device.index:
            return _no_device_reason(device, count)
        try:
            import_tensorrt()
        except BackendUnavailableError as exc:
            return str(exc)
        return None

    def engine(self, source: ModelSource, device: Device, config: Any = None,
               cache: EngineCache | None = None) -> Engine:
        engine = super().engine(source, device, config, cache)
        if engine.config.precision == "fp16" and not _module_available("onnxconverter_common"):
            raise BackendUnavailableError(f"backend 'tensorrt' cannot build fp16 plans here: {FP16_CONVERTER_MISSING}")
        return engine

    def version(self) -> str:
        try:
            return str(import_tensorrt().__version__)
        except BackendUnavailableError:
            return "unavailable"


register_backend(TensorRtBackend())
