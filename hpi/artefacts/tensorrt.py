"""TensorRT plans: built from the model's ONNX export with TensorRT's Python API, each through the engine cache.

A plan is built once per (ONNX artefact, TensorRT version and library distribution, GPU name and compute
capability, precision, batch profile, builder settings, recipe version) and kept in the engine cache (kind
``tensorrt``); :func:`build_plan` builds one without the cache, for export code that prepares plans ahead of time.

Precision lives in the ONNX graph, not in builder flags. TensorRT 11 removed the weakly typed precision flags
(``BuilderFlag.FP16`` and the others): every network is strongly typed and runs in the types its tensors carry.
An fp16 plan is therefore built from an fp16 copy of the ONNX model (:mod:`hpi.artefacts.fp16`; inputs and outputs
stay fp32, so callers feed and receive float32 either way). TensorRT 10 gets the same strongly typed network
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), so both versions build the same thing.

The timing cache (kernel timings, shared by every model's build on one GPU) is stored as engine-cache entries of
kind ``tensorrt-timing``: each build starts from the timings of every entry with the same TensorRT, GPU, CUDA
variant and builder flags, and commits what it measured as a new entry (entries are never rewritten).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hpi import cuda
from hpi.artefacts.artefact import Artefact
from hpi.artefacts.fp16 import convert_to_fp16, fp16_converter_version
from hpi.artefacts.onnx import ONNX_MISSING, export_onnx, onnx_inputs
from hpi.backends.base import BackendConfig
from hpi.cache import EngineCache, cache_key
from hpi.device import Device, device_signature
from hpi.errors import BackendUnavailableError, ExportError, InvalidConfigError
from hpi.source import ModelSource
from hpi.trtlibs import find_tensorrt, import_tensorrt, major_of, tensorrt_key

logger = logging.getLogger(__name__)

PLAN_FILE = "model.plan"
BUILD_INFO_FILE = "build.json"
PLAN_KIND = "tensorrt"
TIMING_KIND = "tensorrt-timing"
TIMING_FILE = "timing.cache"
# Bump when the way a plan is built changes (network flags, profile rules, fp16 conversion settings): old plans
# then miss instead of loading with the old recipe.
PLAN_RECIPE = 2


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


class LogRelay:
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


_RELAYS: dict[int, LogRelay] = {}


def relay(trt: Any) -> LogRelay:
    """One logger per TensorRT module for the whole process: TensorRT requires it to outlive every object."""
    if id(trt) not in _RELAYS:
        _RELAYS[id(trt)] = LogRelay(trt)
    return _RELAYS[id(trt)]


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



def relay_errors() -> str:
    """The last errors TensorRT logged, from every TensorRT module loaded in this process."""
    return "; ".join(r.recent_errors() for r in _RELAYS.values()) or "no error was logged"


# ------------------------------------------------------------------------------------------- building


@dataclass(frozen=True)
class TimingCacheKey:
    """What a timing cache is specific to (NVIDIA: device, CUDA, TensorRT version and builder flags)."""

    tensorrt: str  # version and library distribution (hpi.trtlibs.tensorrt_key)
    device: str  # GPU signature
    cuda: str  # the CUDA variant: the runtime's version and the CUDA major the TensorRT libraries were built for
    tf32: bool
    precision: str

    def parts(self) -> dict[str, Any]:
        return {"tensorrt": self.tensorrt, "device": self.device, "cuda": self.cuda, "tf32": self.tf32,
                "precision": self.precision}


def cuda_variant(trt: Any) -> str:
    """``runtime <cudaRuntimeGetVersion> / libs cu<N>``: what the timing cache and plans depend on besides TRT."""
    try:
        cudart = cuda.import_cudart()
        runtime = str(cuda.check(cudart, cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
    except Exception:  # noqa: BLE001 - the variant is descriptive; a failing query must not block a build
        runtime = "unknown"
    libs = find_tensorrt(major_of(trt))
    return f"runtime {runtime} / libs cu{libs.cuda_major if libs and libs.cuda_major else '?'}"


def _timing_entries(cache: EngineCache, key: TimingCacheKey) -> list[Path]:
    wanted = key.parts()
    return [e.path / TIMING_FILE for e in cache.entries()
            if e.kind == TIMING_KIND and e.parts.get("timing") == wanted and (e.path / TIMING_FILE).is_file()]


def _seed_timing_cache(build_config: Any, cache: EngineCache, key: TimingCacheKey) -> Any:
    """A timing cache holding every timing stored for ``key`` (empty when none is)."""
    timing = build_config.create_timing_cache(b"")
    for path in _timing_entries(cache, key):
        other = build_config.create_timing_cache(path.read_bytes())
        if not timing.combine(other, True):
            logger.warning("TensorRT could not merge the timing cache %s; skipping it", path)
    return timing


def _commit_timing_cache(build_config: Any, cache: EngineCache, key: TimingCacheKey, plan_key: str) -> None:
    data = bytes(memoryview(build_config.get_timing_cache().serialize()))
    cache.get_or_build(TIMING_KIND, {"timing": key.parts(), "after_plan": plan_key},
                       lambda out: (out / TIMING_FILE).write_bytes(data))


@dataclass(frozen=True)
class TimingCacheUse:
    """Where a build reads and commits its timing cache."""

    cache: EngineCache
    key: TimingCacheKey
    plan_key: str  # the plan whose build measured the timings: names the new entry


def build_plan(onnx_file: str | os.PathLike, config: TensorRtConfig | None = None, *,
               input_dims: Mapping[str, Sequence[int | None]] | None = None,
               timing: TimingCacheUse | None = None, device_index: int = 0) -> bytes:
    """Build a serialized TensorRT plan from an ONNX file (the plan itself is not cached).

    Needs a CUDA device: TensorRT's builder times kernels on the GPU it builds for.

    Args:
        onnx_file: the fp32 ONNX model; for ``precision="fp16"`` an fp16 copy is made in memory.
        config: precision, batch profile and builder settings (defaults: fp32, batch 1..8).
        input_dims: full shapes for inputs with dynamic dims other than the batch (see :func:`input_profiles`).
        timing: read the stored timing caches and commit this build's one; None: no timing cache.
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

    cuda.set_device(device_index)
    log = relay(trt)
    log.errors.clear()
    try:
        builder = trt.Builder(log.trt_logger)
    except Exception as exc:  # pybind raises TypeError when createInferBuilder returns null (no usable GPU)
        raise BackendUnavailableError(
            f"TensorRT could not create a builder: {exc}; TensorRT said: {log.recent_errors()}"
        ) from exc
    flags = 0
    if major_of(trt) < 11 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # TensorRT 11: always strongly typed
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log.trt_logger)
    parsed = parser.parse(model_bytes, str(onnx_file)) if model_bytes else parser.parse_from_file(str(onnx_file))
    if not parsed:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or log.recent_errors()
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

    if timing is not None and not build_config.set_timing_cache(
            _seed_timing_cache(build_config, timing.cache, timing.key), False):
        logger.warning("TensorRT rejected the stored timing cache; building without it")
        timing = None

    started = time.perf_counter()
    plan = builder.build_serialized_network(network, build_config)
    if plan is None:
        raise ExportError(f"TensorRT could not build a plan for {onnx_file} ({config.precision}, "
                          f"batch {config.min_batch}..{config.max_batch}): {log.recent_errors()}")
    logger.info("built a TensorRT %s plan for %s in %.1f s", config.precision, onnx_file.name,
                time.perf_counter() - started)
    if timing is not None:
        _commit_timing_cache(build_config, timing.cache, timing.key, timing.plan_key)
    return bytes(memoryview(plan))


def plan_cache_parts(onnx_key: str, tensorrt: str, device_sig: str, config: TensorRtConfig,
                     profiles: Sequence[InputProfile]) -> dict[str, Any]:
    """Everything that determines a plan: the engine-cache key parts (never a path).

    Args:
        onnx_key: the key of the ONNX artefact the plan is built from.
        tensorrt: TensorRT's version and library distribution (:func:`hpi.trtlibs.tensorrt_key`).
        device_sig: the GPU's signature.
        config: precision and builder settings (``timing_cache`` excluded: it speeds builds up, the plan is the same).
        profiles: the optimisation profile.
    """
    parts: dict[str, Any] = {
        "onnx": onnx_key,
        "tensorrt": tensorrt,
        "recipe": PLAN_RECIPE,
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


def spec_input_dims(source: ModelSource, inputs: list[tuple[str, list[int | None]]]) -> dict | None:
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


def build_cached_plan(source: ModelSource, cache: EngineCache, device: Device, config: TensorRtConfig) -> Artefact:
    """The cached plan for ``source`` on ``device``, exporting the ONNX model and building the plan if missing."""
    trt = import_tensorrt()
    onnx_artefact = export_onnx(source, cache)
    onnx_file = onnx_artefact.path
    input_dims = spec_input_dims(source, onnx_inputs(onnx_file))
    profiles = input_profiles(onnx_file, config, input_dims)
    sig = device_signature(device)
    parts = plan_cache_parts(onnx_artefact.key, tensorrt_key(trt), sig, config, profiles)
    timing = TimingCacheUse(cache, TimingCacheKey(tensorrt_key(trt), sig, cuda_variant(trt), config.tf32,
                                                  config.precision), cache_key(parts)) if config.timing_cache else None

    def build(out: Path) -> None:
        logger.info("building a TensorRT %s plan for %s on %s (batch %d..%d); this can take minutes",
                    config.precision, source.name, device, config.min_batch, config.max_batch)
        data = build_plan(onnx_file, config, input_dims=input_dims, timing=timing, device_index=device.index)
        (out / PLAN_FILE).write_bytes(data)
        (out / BUILD_INFO_FILE).write_text(json.dumps({"model": source.name, **parts}, indent=2), encoding="utf-8")

    return Artefact.cached(PLAN_KIND, parts, cache.get_or_build(PLAN_KIND, parts, build), PLAN_FILE)


def plan_path(source: ModelSource, cache: EngineCache, device: Device, config: TensorRtConfig) -> Path:
    """The file of :func:`build_cached_plan`."""
    return build_cached_plan(source, cache, device, config).path


def evict(artefact: Artefact) -> None:
    """Take a cache entry out of use (a plan TensorRT refuses to load), so the next ``get_or_build`` rebuilds it.

    The entry directory is renamed to a dot-name (which the cache never lists or loads) and then removed: a reader
    either finds the whole old entry or none.
    """
    import shutil

    entry = artefact.directory
    if not entry.is_dir():
        return
    graveyard = entry.parent / f".evicted-{entry.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.replace(entry, graveyard)
    except OSError as exc:
        raise ExportError(f"could not evict the cache entry {entry}: {exc}") from exc
    shutil.rmtree(graveyard, ignore_errors=True)
