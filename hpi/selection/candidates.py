"""The ways to run a model here: candidates (backend x precision x settings), and each one's config values.

:func:`config_values` is the one place CPU threads are filled into a backend config, for every mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpi.backends import get_backend, list_backends
from hpi.config import HpiConfig
from hpi.device import Device, resolve_threads
from hpi.source import ModelSource


@dataclass(frozen=True)
class Candidate:
    """One way to run the model."""

    backend: str
    precision: str
    config: dict[str, Any] = field(default_factory=dict)  # the backend config's values (precision included)

    @property
    def label(self) -> str:
        extra = "+trt" if self.config.get("use_tensorrt") else ""
        return f"{self.backend}{extra}[{self.precision}]"

    @classmethod
    def unavailable(cls, key: str) -> Candidate:
        """The candidate a key of :func:`candidates`' reasons names: ``paddle[bf16]``, or a whole backend
        (``tensorrt``, precision ``-``)."""
        backend, _, precision = key.partition("[")
        return cls(backend, precision.rstrip("]") or "-")


def config_values(backend: str, device: Device, hpi_config: HpiConfig, values: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """``values`` for ``backend`` with the CPU thread count filled in (``hpi_config.threads``, else the machine's
    cores) unless the values set it themselves (``threads``, or PaddleX's ``cpu_num_threads``), and, for int8,
    ``hpi_config.calibration_data``."""
    out = dict(values or {})
    names = {f.name for f in dataclasses.fields(get_backend(backend).config_class)}
    if "threads" in names and not device.is_gpu and "threads" not in out and "cpu_num_threads" not in out:
        out["threads"] = resolve_threads(hpi_config.threads)
    if out.get("precision") == "int8" and "calibration_data" in names and "calibration_data" not in out:
        out["calibration_data"] = hpi_config.calibration_data
    return out


def candidates(source: ModelSource, device: Device, hpi_config: HpiConfig) -> tuple[list[Candidate], dict[str, str]]:
    """Every candidate that can run here, and why each other one cannot: keyed by the backend's name when the
    whole backend cannot run, by the candidate's label (``paddle[bf16]``) when the hardware lacks a reduced
    precision the backend offers (asked for only when ``allow_reduced_precision`` is on)."""
    out: list[Candidate] = []
    skipped: dict[str, str] = {}
    for name in list_backends():
        backend = get_backend(name)
        if not backend.can_load(source.format):
            skipped[name] = f"cannot load {source.format} models"
            continue
        reason = backend.unavailable_reason(device)
        if reason:
            skipped[name] = reason
            continue
        if hpi_config.allow_reduced_precision:
            for precision, why in backend.absent_precisions(device).items():
                skipped[Candidate(name, precision).label] = why
        for precision in backend.precisions(device):
            if precision != "fp32" and not hpi_config.allow_reduced_precision:
                continue
            config = config_values(name, device, hpi_config, {"precision": precision})
            if device.is_gpu and backend.capabilities.tensorrt_subgraphs:
                # fp32 without TensorRT (plain CUDA), and TensorRT subgraphs at every precision.
                if precision == "fp32":
                    out.append(Candidate(name, precision, dict(config)))
                out.append(Candidate(name, precision, {**config, "use_tensorrt": True}))
            else:
                out.append(Candidate(name, precision, config))
    return out, skipped


def int8_overflow(candidate: Candidate, device: Device) -> str:
    """How ``candidate``'s int8 model avoids 16-bit saturation on ``device`` (7-bit weights on AVX2 without VNNI),
    in words for the record; "" for any other candidate and for a backend hpi does not quantise."""
    if candidate.precision != "int8" or device.is_gpu:
        return ""
    from hpi.artefacts.quantize import (
        overflow_handling,  # the quantisation tools' module, only when int8 is asked
    )

    return overflow_handling(candidate.backend, device)


def reference_backend(source: ModelSource) -> str:
    """The fp32 reference and normal-mode backend: Paddle Inference; ONNX Runtime for a model only in ONNX."""
    return "paddle" if source.format == "paddle" else "onnxruntime"


def reference_candidate(source: ModelSource, device: Device, hpi_config: HpiConfig) -> Candidate:
    """Paddle Inference fp32 (normal mode); ONNX Runtime fp32 for a model only available as ONNX."""
    name = reference_backend(source)
    return Candidate(name, "fp32", config_values(name, device, hpi_config, {"precision": "fp32"}))


def reordering_variant(reference: Candidate) -> Candidate:
    """The fp32 reference computed another legitimate way: other kernels (Paddle without oneDNN, ONNX Runtime
    without graph fusions) and, where there is more than one thread, one thread. How far its outputs move from the
    reference's is what fp32 summation order alone does to this model (:func:`hpi.selection.gate.fp32_bound`)."""
    values = dict(reference.config)
    if reference.backend == "paddle":
        values["enable_onednn"] = False
    else:
        values["graph_optimization"] = "disable"
    if int(values.get("threads") or 1) > 1:
        values["threads"] = 1
    return Candidate(reference.backend, "fp32", values)


def high_performance_config(backend: str, values: Mapping[str, Any], source: ModelSource, hpi_config: HpiConfig
                            ) -> dict[str, Any]:
    """The backend config high-performance mode runs ``backend`` with: ``values`` with ``fold_preprocess=True``
    where cast, mean/std and layout fold into the graph. The one place that decides it, for ``create_model``, the
    measurement's end-to-end rounds, ``hpi bench``'s stage split and the Triton export alike.

    It folds when the backend takes uint8 NHWC input (ONNX Runtime, OpenVINO), the model has a fixed,
    channels-first input, and neither ``hpi_config.fold_preprocess=False`` nor an explicit
    ``backend_config.fold_preprocess`` says otherwise."""
    spec = source.spec.preprocess
    folds = (hpi_config.fold_preprocess and "fold_preprocess" not in hpi_config.backend_config
             and not values.get("fold_preprocess")
             and "NHWC_U8" in get_backend(backend).capabilities.input_layouts and spec is not None
             and spec.output_size is not None and spec.channels_first)
    return {**values, "fold_preprocess": True} if folds else dict(values)
