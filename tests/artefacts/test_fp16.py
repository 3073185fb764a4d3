"""Tests for hpi/artefacts/fp16.py: the fp16 copy keeps fp32 I/O and stays within fp16 tolerance of fp32."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from hpi.artefacts.fp16 import convert_to_fp16
from tests.tiny_onnx import ort_reference, random_batch, tiny_onnx

FP16_TOL = {"rtol": 1e-2, "atol": 5e-2}


@pytest.mark.skipif(importlib.util.find_spec("onnxconverter_common") is None,
                    reason="onnxconverter-common is not installed (an optional dependency of fp16 TensorRT plans)")
def test_fp16_copy_keeps_fp32_io_and_stays_close(tmp_path):
    import onnx

    onnx_file = tiny_onnx(tmp_path / "model.onnx")
    converted = convert_to_fp16(onnx.load(str(onnx_file)))
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [v.type.tensor_type.elem_type for v in converted.graph.input] == [float32]
    assert [v.type.tensor_type.elem_type for v in converted.graph.output] == [float32]
    assert {t.data_type for t in converted.graph.initializer} == {float16}
    onnx.checker.check_model(converted, full_check=True)
    fp16_file = tmp_path / "model16.onnx"
    onnx.save(converted, str(fp16_file))
    x = random_batch(4)
    reference, halved = ort_reference(onnx_file, x), ort_reference(fp16_file, x)
    assert halved.dtype == np.float32
    np.testing.assert_allclose(halved, reference, **FP16_TOL)
    assert (halved.argmax(1) == reference.argmax(1)).all()
