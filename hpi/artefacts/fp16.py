"""fp16 copies of ONNX models, for strongly typed fp16 TensorRT plans (graph inputs and outputs stay fp32)."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from hpi.errors import BackendUnavailableError, ExportError

FP16_CONVERTER_MISSING = (
    "fp16 plans are built from an fp16 copy of the ONNX model (TensorRT 11 networks are strongly typed); "
    "that conversion needs onnxconverter-common: pip install onnxconverter-common"
)
FP16_MAX = 65504.0  # largest finite fp16: weights beyond it are clamped, none below it is


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
