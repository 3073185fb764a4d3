"""One interface for every inference backend: capabilities, typed per-backend configs, engines that load and run.

A :class:`Backend` says what it can do (:class:`Capabilities`) and, for a device, why it cannot run there
(:meth:`Backend.unavailable_reason`) before anything is built. :meth:`Backend.engine` is cheap: it returns an
:class:`Engine` holding only paths and settings. :meth:`Engine.load` asks :mod:`hpi.artefacts` for what is missing
(through the engine cache) and creates the session; :meth:`Engine.run` checks state and inputs once, then calls the backend's
``_run``. ``with engine:`` loads and closes. Backends are looked up in :mod:`hpi.backends`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from hpi.cache import EngineCache
from hpi.device import Device
from hpi.errors import (
    BackendUnavailableError,
    EngineBuildError,
    HpiError,
    HpiInternalError,
    InferenceError,
    InvalidConfigError,
    InvalidInputError,
)
from hpi.precision import precision_reason
from hpi.source import ModelSource

logger = logging.getLogger(__name__)

Precision = str  # one of PRECISIONS
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # int8: calibrated post-training quantisation (hpi.artefacts.quantize)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared instead of tested with isinstance."""

    devices: frozenset[str]  # device kinds: "cpu", "gpu"
    precisions: Mapping[str, tuple[Precision, ...]]  # per device kind, the precisions it can run
    dynamic_batch: bool  # one engine serves any batch size (within a profile, for TensorRT)
    model_formats: frozenset[str]  # what it loads: "paddle", "onnx" (a Paddle model is exported to ONNX first)
    input_layouts: tuple[str, ...] = ("NCHW",)  # "NHWC_U8": can fold preprocessing into the graph
    tensorrt_subgraphs: bool = False  # on GPU, runs TensorRT subgraphs when its config says use_tensorrt=True
    batched_nms: bool = False  # a detection graph with NMS inside runs at any batch size
    # Per device kind, precisions this backend does not offer there and why (reported, never a candidate).
    declined: Mapping[str, Mapping[Precision, str]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class BackendConfig:
    """Base of the typed, frozen per-backend configs."""

    precision: Precision = "fp32"
    # Take uint8 NHWC RGB and do cast, mean/std and layout inside the graph (backends whose capabilities list
    # "NHWC_U8"); the CPU then only decodes, resizes and crops.
    fold_preprocess: bool = False

    # PaddleX's hpi_config.backend_config names -> our field names.
    ALIASES: ClassVar[dict[str, str]] = {"cpu_num_threads": "threads"}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> BackendConfig:
        """Build from a mapping (PaddleX's ``backend_config``); unknown keys are an error that lists the known."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            field_name = cls.ALIASES.get(key, key)
            if field_name not in names:
                known = ", ".join(sorted(names | set(cls.ALIASES)))
                raise InvalidConfigError(f"{cls.__name__}: unknown key {key!r}; known keys: {known}")
            kwargs[field_name] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise InvalidConfigError(f"{cls.__name__}: {exc}") from exc

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InvalidConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Engine(ABC):
    """A model loaded on one backend and device. Not thread-safe: one caller at a time (a lock enforces it)."""

    def __init__(self, backend: Backend, source: ModelSource, device: Device, config: BackendConfig,
                 cache: EngineCache) -> None:
        self.backend = backend
        self.source = source
        self.device = device
        self.config = config
        self.cache = cache
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.input_shapes: dict[str, list[int | None]] = {}  # None marks a dynamic dim
        self.input_dtypes: dict[str, np.dtype] = {}
        self._loaded = False
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def loaded(self) -> bool:
        return self._loaded

    def describe(self) -> str:
        return f"{self.backend.name}[{self.config.precision}] on {self.device}"

    def load(self) -> Engine:
        """Build missing artefacts through the cache and create the session. Idempotent."""
        if not self._loaded:
            self._load()
            if not self.input_names or not self.output_names:
                raise HpiInternalError(f"{self.backend.name} engine did not record its input and output names")
            self._loaded = True
        return self

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch. A bare array feeds the single input; a mapping feeds inputs by name."""
        if not self._loaded:
            raise InferenceError(f"{self.describe()}: call load() (or use 'with engine:') before run()")
        if isinstance(inputs, np.ndarray):
            if len(self.input_names) != 1:
                raise InvalidInputError(
                    f"{self.describe()}: model has inputs {self.input_names}; pass a mapping of name to array"
                )
            feed = {self.input_names[0]: inputs}
        else:
            feed = dict(inputs)
            missing = [n for n in self.input_names if n not in feed]
            extra = [n for n in feed if n not in self.input_names]
            if missing or extra:
                raise InvalidInputError(
                    f"{self.describe()}: inputs {sorted(feed)} do not match the model's {self.input_names}"
                )
        for name, array in feed.items():
            if not isinstance(array, np.ndarray):
                raise InvalidInputError(f"input {name!r}: expected a numpy array, got {type(array).__name__}")
            expected_dtype = self.input_dtypes.get(name)
            if expected_dtype is not None and array.dtype != expected_dtype:
                raise InvalidInputError(f"input {name!r}: expected dtype {expected_dtype}, got {array.dtype}")
            if name in self.input_shapes:
                check_batch(array, self.input_shapes[name], name)
            if not array.flags.c_contiguous:
                feed[name] = np.ascontiguousarray(array)
        with self._lock:
            try:
                return self._run(feed)
            except (InvalidInputError, InferenceError):
                raise
            except Exception as exc:  # the backend's own error type: wrap it, keep its traceback
                raise InferenceError(f"{self.describe()}: inference failed: {exc}") from exc

    def close(self) -> None:
        """Release the session and any device memory. Safe to call twice."""
        if self._loaded:
            self._close()
            self._loaded = False

    def __enter__(self) -> Engine:
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _load(self) -> None:
        """Create the session; set ``input_names`` and ``output_names``."""

    @abstractmethod
    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run on validated, contiguous inputs; return outputs in ``output_names`` order."""

    def _close(self) -> None:  # noqa: B027 - optional hook: most sessions are freed by garbage collection
        """Free resources."""


class Backend(ABC):
    """A way to run models. Subclasses set ``name``, ``capabilities``, ``config_class`` and ``engine_class``."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    config_class: ClassVar[type[BackendConfig]]
    engine_class: ClassVar[type[Engine]]
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()  # (importable module, pip requirement) pairs

    def can_load(self, model_format: str) -> bool:
        """Whether this backend loads a model in ``model_format`` ("paddle", "onnx"), directly or via ONNX export."""
        formats = self.capabilities.model_formats
        return model_format in formats or "onnx" in formats

    def unavailable_reason(self, device: Device) -> str | None:
        """Why this backend cannot run on ``device`` here, or None when it can."""
        if device.kind not in self.capabilities.devices:
            return f"{self.name} does not run on {device.kind}"
        for module, requirement in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{requirement} is not installed"
        return self._device_reason(device)

    def _device_reason(self, device: Device) -> str | None:
        """Backend-specific device checks (a CUDA device, a provider in the build...)."""
        return None

    def version(self) -> str:
        """The backend library's version, part of every cache key."""
        return "unknown"

    def precisions(self, device: Device) -> tuple[Precision, ...]:
        """The precisions this backend runs natively on ``device`` (its capabilities, less what the hardware
        lacks: bf16 only on a CPU with AMX-BF16 or AVX512-BF16)."""
        return tuple(p for p in self.capabilities.precisions.get(device.kind, ()) if precision_reason(p, device) is None)

    def absent_precisions(self, device: Device) -> dict[Precision, str]:
        """The precisions this backend could run but ``device`` cannot, and those it declines on this kind of
        device (:attr:`Capabilities.declined`), each with the reason (the hardware's first)."""
        reasons = {p: precision_reason(p, device) for p in self.capabilities.precisions.get(device.kind, ())}
        out = {p: reason for p, reason in reasons.items() if reason is not None}
        for precision, why in self.capabilities.declined.get(device.kind, {}).items():
            hardware = precision_reason(precision, device)
            out[precision] = f"{hardware}; and {why}" if hardware else why
        return out

    def make_config(self, values: BackendConfig | Mapping[str, Any] | None) -> BackendConfig:
        if isinstance(values, self.config_class):
            return values
        if isinstance(values, BackendConfig):
            raise InvalidConfigError(
                f"backend {self.name!r} takes {self.config_class.__name__}, got {type(values).__name__}"
            )
        return self.config_class.from_dict(values)  # type: ignore[arg-type]

    def engine(self, source: ModelSource, device: Device, config: BackendConfig | Mapping[str, Any] | None = None,
               cache: EngineCache | None = None) -> Engine:
        """A cheap, unloaded engine. Raises :class:`BackendUnavailableError` with the reason if it cannot run."""
        reason = self.unavailable_reason(device)
        if reason:
            raise BackendUnavailableError(f"backend {self.name!r} is not available on {device}: {reason}")
        cfg = self.make_config(config)
        if cfg.precision not in self.precisions(device):
            why = self.absent_precisions(device).get(cfg.precision)
            raise InvalidConfigError(
                f"backend {self.name!r} cannot run {cfg.precision} on {device.kind}"
                f"{f': {why}' if why else ''}; supported: {', '.join(self.precisions(device))}"
            )
        if not self.can_load(source.format):
            raise InvalidConfigError(f"backend {self.name!r} cannot load {source.format} models")
        if cfg.fold_preprocess:
            if "NHWC_U8" not in self.capabilities.input_layouts:
                raise InvalidConfigError(f"backend {self.name!r} cannot fold preprocessing into the graph")
            spec = source.spec.preprocess
            if spec is None or spec.output_size is None:
                raise InvalidConfigError(f"{source.name}: folding preprocessing needs a fixed input size (a crop)")
        return self.engine_class(self, source, device, cfg, cache or EngineCache())


@contextlib.contextmanager
def library_refusal(what: str) -> Iterator[None]:
    """Turn an exception of a backend's own library while building or loading an engine (Paddle's
    ``create_predictor``, ONNX Runtime's ``InferenceSession``, OpenVINO's ``compile_model``) into an
    :class:`~hpi.errors.EngineBuildError` that starts with ``what``; hpi's own errors pass through unchanged."""
    try:
        yield
    except (HpiError, HpiInternalError):
        raise
    except Exception as exc:  # the libraries raise ValueError, RuntimeError or their own types for a graph they refuse
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineBuildError(f"{what}: {type(exc).__name__}: {first}") from exc


def check_batch(array: np.ndarray, expected: Sequence[int | None], name: str) -> None:
    """Validate an input's rank and fixed dims (None = any) with a message naming it."""
    if array.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected, array.shape)):
        shape = ["N" if e is None else e for e in expected]
        raise InvalidInputError(f"input {name!r}: expected shape {shape}, got {list(array.shape)}")
