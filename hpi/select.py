"""Which backend runs a model: ``hpi_config`` parsing, normal mode, explicit choice, and high-performance mode.

All defaults are resolved here, in one place, and every resolved choice is a :class:`BackendChoice` record that
says why it was made.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpi.backends import get_backend, list_backends
from hpi.backends.base import BackendConfig
from hpi.device import Device
from hpi.errors import BackendUnavailableError, InvalidConfigError
from hpi.model import ModelSource

logger = logging.getLogger(__name__)

# Used only when measured selection is switched off (auto_config=False without a backend): a stated order.
STATIC_ORDER = {"cpu": ("onnxruntime", "openvino", "paddle"), "gpu": ("tensorrt", "onnxruntime", "paddle")}


@dataclass(frozen=True)
class HpiConfig:
    """PaddleX's ``hpi_config`` keys, plus hpi's own."""

    auto_config: bool = True  # measure candidates and pick the fastest that passes the accuracy gate
    backend: str | None = None  # force a backend: paddle, onnxruntime, openvino, tensorrt
    backend_config: Mapping[str, Any] = field(default_factory=dict)  # that backend's settings (PaddleX names ok)
    allow_reduced_precision: bool = True  # let selection consider bf16 / fp16 candidates
    threads: int | None = None  # CPU threads for every candidate; None: the machine's cores
    accuracy_gate: Mapping[str, Any] = field(default_factory=dict)  # overrides of hpi.selection.AccuracyGate
    fold_preprocess: bool = True  # high-performance mode: normalise inside the graph where the backend can
    spin_wait: bool = True  # engine threads may spin between runs; pipelines turn it off for their sub-models

    def gate(self) -> Any:
        """The :class:`hpi.selection.AccuracyGate` with this config's overrides."""
        from hpi.selection import AccuracyGate

        names = {f.name for f in dataclasses.fields(AccuracyGate)}
        unknown = sorted(set(self.accuracy_gate) - names)
        if unknown:
            raise InvalidConfigError(f"hpi_config.accuracy_gate: unknown key(s) {unknown}; known: {sorted(names)}")
        return AccuracyGate(**self.accuracy_gate)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | HpiConfig | None) -> HpiConfig:
        if isinstance(values, HpiConfig):
            return values
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InvalidConfigError(f"hpi_config: unknown key(s) {unknown}; known: {sorted(names)}")
        cfg = cls(**values)
        if cfg.backend is not None and cfg.backend not in list_backends():
            raise InvalidConfigError(f"hpi_config.backend: unknown backend {cfg.backend!r}; known: {list_backends()}")
        if not isinstance(cfg.backend_config, Mapping):
            raise InvalidConfigError("hpi_config.backend_config: expected a mapping")
        return cfg


def with_spin_policy(choice: BackendChoice, hpi_config: HpiConfig) -> BackendChoice:
    """Apply ``hpi_config.spin_wait=False`` to backends whose threads spin between runs (ONNX Runtime)."""
    fields = {f.name for f in dataclasses.fields(choice.config)}
    if hpi_config.spin_wait or "allow_spinning" not in fields or "allow_spinning" in hpi_config.backend_config:
        return choice
    return dataclasses.replace(choice, config=dataclasses.replace(choice.config, allow_spinning=False))


def with_folding(choice: BackendChoice, source: ModelSource, hpi_config: HpiConfig) -> BackendChoice:
    """High-performance mode folds cast, mean/std and layout into the graph when the chosen backend can (ONNX
    Runtime, OpenVINO) and the model has a fixed input size; the CPU then only decodes, resizes and crops. The
    folded graph computes the same values (ONNX Runtime: identical; OpenVINO: within 1e-6 relative)."""
    backend = get_backend(choice.backend)
    spec = source.spec.preprocess
    if (not hpi_config.fold_preprocess or "fold_preprocess" in hpi_config.backend_config or choice.config.fold_preprocess
            or "NHWC_U8" not in backend.capabilities.input_layouts or spec is None or spec.output_size is None
            or not spec.channels_first):
        return choice
    config = dataclasses.replace(choice.config, fold_preprocess=True)
    return dataclasses.replace(choice, config=config, reason=f"{choice.reason}; preprocessing folded into the graph")


@dataclass(frozen=True)
class BackendChoice:
    """The decision of which backend, precision and config run a model, and why."""

    backend: str
    config: BackendConfig
    reason: str  # one line a person can read
    mode: str  # "normal", "explicit", "measured", "static"

    @property
    def precision(self) -> str:
        return self.config.precision


def _with_threads(backend: str, values: Mapping[str, Any], threads: int | None) -> BackendConfig:
    b = get_backend(backend)
    values = dict(values)
    field_names = {f.name for f in dataclasses.fields(b.config_class)}
    if threads is not None and "threads" in field_names and "threads" not in values and "cpu_num_threads" not in values:
        values["threads"] = threads
    return b.make_config(values)


def resolve_backend(
    source: ModelSource, device: Device, *, use_hpip: bool, hpi_config: HpiConfig, measure: Any = None
) -> BackendChoice:
    """Decide the backend for ``source`` on ``device``.

    - ``hpi_config.backend`` given: that backend, or an error saying why it cannot run here (no fallback).
    - ``use_hpip=False``: normal mode, Paddle Inference fp32 (PaddleX's meaning). An ONNX-only model cannot run
      on Paddle, so its normal mode is ONNX Runtime fp32, and the reason says so.
    - ``use_hpip=True``: ``measure(source, device, hpi_config)`` (measured selection) when given and
      ``auto_config`` is on; otherwise the first available backend of :data:`STATIC_ORDER`.
    """
    if hpi_config.backend is not None:
        backend = get_backend(hpi_config.backend)
        reason = backend.unavailable_reason(device)
        if reason:
            available = [n for n in list_backends() if get_backend(n).unavailable_reason(device) is None]
            raise BackendUnavailableError(
                f"backend {hpi_config.backend!r} is not available on {device}: {reason}; available: {', '.join(available)}"
            )
        config = _with_threads(backend.name, hpi_config.backend_config, hpi_config.threads)
        return BackendChoice(backend.name, config, "requested in hpi_config.backend", "explicit")

    if not use_hpip:
        name = "paddle" if source.format == "paddle" else "onnxruntime"
        reason = get_backend(name).unavailable_reason(device)
        if reason:
            raise BackendUnavailableError(f"normal mode needs backend {name!r}, which is not available: {reason}")
        why = "normal mode: Paddle Inference fp32" if name == "paddle" else (
            "normal mode for an ONNX model: Paddle Inference cannot load ONNX, ONNX Runtime fp32 is the reference")
        return BackendChoice(name, _with_threads(name, {}, hpi_config.threads), why, "normal")

    if hpi_config.auto_config and measure is not None:
        return measure(source, device, hpi_config)

    tried = []
    for name in STATIC_ORDER[device.kind]:
        backend = get_backend(name)
        if not backend.can_load(source.format):
            continue
        reason = backend.unavailable_reason(device)
        if reason is None:
            config = _with_threads(name, {}, hpi_config.threads)
            return BackendChoice(name, config, f"first available in the static order {STATIC_ORDER[device.kind]}",
                                 "static")
        tried.append(f"{name}: {reason}")
    raise BackendUnavailableError(f"no backend can run {source.name} on {device}: " + "; ".join(tried))
