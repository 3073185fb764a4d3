"""Image preprocessing for PaddleX classification models: one spec, realised three ways.

* :mod:`~hpi.preprocess.spec`: :class:`PreprocessSpec`, parsed from ``inference.yml``'s ``transform_ops``.
* :mod:`~hpi.preprocess.reference`: PaddleX's op chain written plainly, the ground truth.
* :mod:`~hpi.preprocess.fused`: :class:`FusedPreprocessor`, the CPU kernel (bit-identical to the reference).
* :mod:`~hpi.preprocess.graph`: normalisation folded into ONNX / OpenVINO graphs, with :class:`ResizeCropU8`
  as the CPU half.
* :mod:`~hpi.preprocess.decode`: bytes to pixels as PaddleX's reader does, plus an opt-in reduced JPEG decode.
"""

from __future__ import annotations

from hpi.preprocess.decode import Decoded, decode, decode_image
from hpi.preprocess.fused import FusedPreprocessor, ItemError, PreprocessedBatch
from hpi.preprocess.graph import ResizeCropU8, fold_into_onnx, fold_into_openvino
from hpi.preprocess.spec import PreprocessSpec

__all__ = [
    "Decoded",
    "FusedPreprocessor",
    "ItemError",
    "PreprocessSpec",
    "PreprocessedBatch",
    "ResizeCropU8",
    "decode",
    "decode_image",
    "fold_into_onnx",
    "fold_into_openvino",
]
