"""The one place the backend for a model is chosen: explicit, normal, measured or static, then folding and spinning.

:func:`resolve_choice` reads the :class:`~hpi.config.HpiConfig` and returns a :class:`BackendChoice` record that
says why. Nothing is built here except, for a measured choice, what the measurement builds.
"""

from __future__ import annotations

import dataclasses
import logging

from hpi.backends import get_backend, list_backends
from hpi.backends.choice import BackendChoice
from hpi.cache import EngineCache
from hpi.calibration import check_calibration_dir
from hpi.config import HpiConfig
from hpi.device import Device
from hpi.errors import BackendUnavailableError, InvalidConfigError
from hpi.selection.candidates import config_values, high_performance_config, reference_backend
from hpi.selection.decision import cached_selection
from hpi.selection.measure import MEASURED_TASKS
from hpi.selection.record import SelectionRecord
from hpi.source import ModelSource

logger = logging.getLogger(__name__)

# Used when measured selection is switched off (auto_config=False without a backend) or cannot judge the model's
# task: a stated order.
STATIC_ORDER = {"cpu": ("onnxruntime", "openvino", "paddle"), "gpu": ("tensorrt", "onnxruntime", "paddle")}


def resolve_choice(source: ModelSource, device: Device, hpi_config: HpiConfig, *, use_hpip: bool,
                   cache: EngineCache) -> BackendChoice:
    """Decide the backend for ``source`` on ``device``.

    - ``hpi_config.backend`` given: that backend, or an error saying why it cannot run here (no fallback).
    - ``use_hpip=False``: normal mode, Paddle Inference fp32 (PaddleX's meaning). An ONNX-only model cannot run
      on Paddle, so its normal mode is ONNX Runtime fp32, and the reason says so.
    - ``use_hpip=True``: measured selection (:func:`hpi.selection.decision.cached_selection`) when ``auto_config``
      is on and the accuracy gate can judge the model (classification, embedding, and detection through the box
      gate); otherwise the first available backend of :data:`STATIC_ORDER`.

    High-performance mode then folds preprocessing into the graph where it can (:func:`fold_preprocessing`), and
    ``hpi_config.spin_wait=False`` reaches backends whose threads spin (:func:`without_spinning`).
    """
    if hpi_config.calibration_data is not None:
        check_calibration_dir(hpi_config.calibration_data)  # a clear error now, not when int8 is built
    if hpi_config.gate_data is not None:
        check_calibration_dir(hpi_config.gate_data, "gate_data")  # a clear error now, not in the measurement
    if hpi_config.backend is not None:
        choice = _explicit(source, device, hpi_config)
    elif not use_hpip:
        choice = _normal(source, device, hpi_config)
    elif hpi_config.auto_config and source.spec.task in MEASURED_TASKS:
        choice = choice_from_record(cached_selection(source, device, hpi_config, cache=cache, batch_size=1))
        logger.info("selection for %s on %s: %s", source.name, device, choice.reason)
    else:
        if hpi_config.auto_config:
            logger.info("%s: %s models are not measured; high-performance mode uses the static order",
                        source.name, source.spec.task)
        choice = _static(source, device, hpi_config)
    if use_hpip:
        choice = fold_preprocessing(choice, source, hpi_config)
    choice = without_spinning(choice, hpi_config)
    logger.info("%s runs on %s[%s]: %s", source.name, choice.backend, choice.precision, choice.reason)
    return choice


def _make(backend: str, device: Device, hpi_config: HpiConfig, values: object, reason: str, mode: str
          ) -> BackendChoice:
    config = get_backend(backend).make_config(config_values(backend, device, hpi_config, values))  # type: ignore[arg-type]
    return BackendChoice(backend, config, reason, mode)


def _explicit(source: ModelSource, device: Device, hpi_config: HpiConfig) -> BackendChoice:
    name = hpi_config.backend
    if name not in list_backends():
        raise InvalidConfigError(f"hpi_config.backend: unknown backend {name!r}; known: {list_backends()}")
    reason = get_backend(name).unavailable_reason(device)
    if reason:
        available = [n for n in list_backends() if get_backend(n).unavailable_reason(device) is None]
        raise BackendUnavailableError(
            f"backend {name!r} is not available on {device}: {reason}; available: {', '.join(available)}"
        )
    return _make(name, device, hpi_config, hpi_config.backend_config, "requested in hpi_config.backend", "explicit")


def _normal(source: ModelSource, device: Device, hpi_config: HpiConfig) -> BackendChoice:
    name = reference_backend(source)
    reason = get_backend(name).unavailable_reason(device)
    if reason:
        raise BackendUnavailableError(f"normal mode needs backend {name!r}, which is not available: {reason}")
    why = "normal mode: Paddle Inference fp32" if name == "paddle" else (
        "normal mode for an ONNX model: Paddle Inference cannot load ONNX, ONNX Runtime fp32 is the reference")
    return _make(name, device, hpi_config, {}, why, "normal")


def _static(source: ModelSource, device: Device, hpi_config: HpiConfig) -> BackendChoice:
    tried = []
    for name in STATIC_ORDER[device.kind]:
        backend = get_backend(name)
        if not backend.can_load(source.format):
            continue
        reason = backend.unavailable_reason(device)
        if reason is None:
            return _make(name, device, hpi_config, {}, f"first available in the static order {STATIC_ORDER[device.kind]}",
                         "static")
        tried.append(f"{name}: {reason}")
    raise BackendUnavailableError(f"no backend can run {source.name} on {device}: " + "; ".join(tried))


def choice_from_record(record: SelectionRecord) -> BackendChoice:
    """A measured selection's winner as a :class:`BackendChoice`."""
    winner = record.winner.candidate
    return BackendChoice(winner.backend, get_backend(winner.backend).make_config(winner.config), record.reason(),
                         "measured")


def fold_preprocessing(choice: BackendChoice, source: ModelSource, hpi_config: HpiConfig) -> BackendChoice:
    """High-performance mode folds cast, mean/std and layout into the graph when the chosen backend can (ONNX
    Runtime, OpenVINO) and the model has a fixed input size (:func:`~hpi.selection.candidates.high_performance_config`);
    the CPU then only decodes, resizes and crops. The folded graph computes the same values (ONNX Runtime:
    identical; OpenVINO: within 1e-6 relative)."""
    values = high_performance_config(choice.backend, {"fold_preprocess": choice.config.fold_preprocess}, source,
                                     hpi_config)
    if values["fold_preprocess"] == choice.config.fold_preprocess:
        return choice
    config = dataclasses.replace(choice.config, fold_preprocess=True)
    return dataclasses.replace(choice, config=config, reason=f"{choice.reason}; preprocessing folded into the graph")


def without_spinning(choice: BackendChoice, hpi_config: HpiConfig) -> BackendChoice:
    """Apply ``hpi_config.spin_wait=False`` to backends whose threads spin between runs (ONNX Runtime)."""
    fields = {f.name for f in dataclasses.fields(choice.config)}
    if hpi_config.spin_wait or "allow_spinning" not in fields or "allow_spinning" in hpi_config.backend_config:
        return choice
    return dataclasses.replace(choice, config=dataclasses.replace(choice.config, allow_spinning=False))
