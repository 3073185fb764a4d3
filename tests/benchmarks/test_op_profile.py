"""benchmarks/op_profile.py: the work each op does (FLOPs, weights) and the precision each OpenVINO kernel ran at."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmarks.scripts import load_script


@pytest.fixture(scope="module")
def op_profile():
    return load_script("op_profile")


def test_each_compute_op_counts_its_multiply_adds_and_weights(op_profile):
    ov = pytest.importorskip("openvino")
    import openvino.opset13 as ops

    x = ops.parameter([1, 8, 16, 16], ov.Type.f32)
    conv = ops.convolution(x, ops.constant(np.ones((16, 8, 3, 3), np.float32)), [2, 2], [1, 1], [1, 1], [1, 1])
    conv.set_friendly_name("conv")  # out 1x16x8x8: 1024 outputs x 8 x 3 x 3 multiply-adds
    dw = ops.group_convolution(conv, ops.constant(np.ones((16, 1, 1, 3, 3), np.float32)), [1, 1], [1, 1], [1, 1],
                               [1, 1])
    dw.set_friendly_name("dw")  # depthwise: 1024 outputs x 1 x 3 x 3
    flat = ops.reshape(dw, ops.constant(np.array([1, 1024], np.int64)), special_zero=False)
    fc = ops.matmul(flat, ops.constant(np.ones((10, 1024), np.float32)), transpose_a=False, transpose_b=True)
    fc.set_friendly_name("fc")  # 10 outputs x 1024
    work = op_profile.op_work(ov.Model([fc], [x]))
    assert work == {"conv": (2.0 * 1024 * 72, 16 * 8 * 9), "dw": (2.0 * 1024 * 9, 16 * 9),
                    "fc": (2.0 * 10 * 1024, 10 * 1024)}


@pytest.mark.parametrize(("exec_type", "precision"), [
    ("brgconv_avx512_1x1_bf16", "bf16"), ("brgconv_avx2_f32", "fp32"), ("jit_avx512_I8", "int8"),
    ("brgemm_avx512_amx_u8", "int8"), ("ref_any", "any"),
])
def test_the_kernel_name_says_its_precision(op_profile, exec_type, precision):
    assert op_profile.kernel_precision(exec_type) == precision
