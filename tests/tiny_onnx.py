"""The smoke script's seeded ONNX classifier (Conv-ReLU-GAP-Gemm) and its model directory, for build and backend
tests; one definition, in scripts/gpu_smoke.py, which must stay self-contained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpi.source import ModelSource
from tests.gpu_fakes import smoke_module

_SMOKE = smoke_module()
INFERENCE_YML = _SMOKE.SMOKE_YML


def tiny_onnx(path: Path, *, batch: int | str = "N", height: int | str = 16, width: int | str = 16) -> Path:
    """3xHxW -> 5 logits; any dim may be a symbol (dynamic)."""
    return _SMOKE.smoke_onnx(path, batch=batch, height=height, width=width)


def tiny_source(directory: Path, **dims: int | str) -> ModelSource:
    return ModelSource.from_path(_SMOKE.write_smoke_model(directory, **dims))


def ort_reference(onnx_file: Path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def random_batch(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)
