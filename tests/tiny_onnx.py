"""A tiny seeded ONNX classifier (Conv-ReLU-GAP-Gemm) and its model directory, for build and backend tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpi.model import ModelSource

INFERENCE_YML = """\
Global:
  model_name: TinyNet
PreProcess:
  transform_ops:
  - ResizeImage: {resize_short: 16}
  - CropImage: {size: 16}
  - NormalizeImage: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], scale: 1.0/255.0, order: ''}
  - ToCHWImage: null
PostProcess:
  Topk: {topk: 1, label_list: [a, b, c, d, e]}
"""


def tiny_onnx(path: Path, *, batch: int | str = "N", height: int | str = 16, width: int | str = 16) -> Path:
    """Conv-ReLU-GAP-Gemm classifier with seeded weights whose logits spread over several units."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": (rng.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32),
        "b1": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "w2": (rng.standard_normal((5, 8)) * 2.0).astype(np.float32),
        "b2": rng.standard_normal(5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_source(directory: Path, **dims: int | str) -> ModelSource:
    tiny_onnx(directory / "model.onnx", **dims)
    (directory / "inference.yml").write_text(INFERENCE_YML, encoding="utf-8")
    return ModelSource.from_path(directory)


def ort_reference(onnx_file: Path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def random_batch(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)
