"""hpi/selection/gate.py: the accuracy gate's thresholds."""

from __future__ import annotations

import numpy as np

from hpi.config import AccuracyGate
from hpi.selection.gate import compare_outputs, fp32_bound, relative_error


def test_gate_thresholds():
    gate = AccuracyGate()
    ref = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert compare_outputs("classification", ref, ref + 1e-5, "fp32", gate).passed
    small = compare_outputs("classification", ref, ref + 0.01, "fp32", gate)
    assert not small.passed and "relative error" in small.why
    assert compare_outputs("classification", ref, ref + 0.01, "bf16", gate).passed  # reduced: judged by ranking
    bounded = AccuracyGate(max_rel_error_reduced=1e-3)
    assert not compare_outputs("classification", ref, ref + 0.01, "bf16", bounded).passed
    ref6 = np.array([[0.5, 0.2, 0.1, 0.08, 0.06, 0.04, 0.02]])
    shuffled = np.array([[0.5, 0.001, 0.002, 0.003, 0.004, 0.3, 0.2]])  # same top-1, top-5 mostly different
    res = compare_outputs("classification", ref6, shuffled, "bf16", gate)
    assert not res.passed and res.top1_agreement == 1.0 and "top-5 overlap 0.600" in res.why
    swapped = compare_outputs("classification", ref, ref[:, ::-1], "bf16", gate)
    assert not swapped.passed and "top-1 agreement 0.000" in swapped.why
    emb = np.random.default_rng(0).normal(size=(4, 16))
    assert compare_outputs("embedding", emb, emb * 1.001, "fp32", gate).passed
    assert not compare_outputs("embedding", emb, emb + 0.5, "fp32", gate).passed
    assert not compare_outputs("classification", ref, ref[:1], "fp32", gate).passed


def test_fp32_bound_is_the_floor_or_the_scaled_spread_within_the_cap():
    gate = AccuracyGate()
    assert fp32_bound(gate, None) == gate.max_rel_error_fp32  # spread not measured: the fixed floor
    assert fp32_bound(gate, 1e-7) == gate.max_rel_error_fp32  # a shallow net: reordering far below the floor
    assert fp32_bound(gate, 1e-3) == gate.fp32_spread_factor * 1e-3  # a deep net: the measured spread decides
    assert fp32_bound(gate, 1.0) == gate.max_rel_error_fp32_cap  # never above the cap
    assert fp32_bound(AccuracyGate(max_rel_error_fp32=0.05), 1.0) == 0.05  # the floor is never lowered


def _mlp(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, order: str) -> np.ndarray:
    """A small fp32 net whose first layer sums its inputs in one of three orders, as different kernels do."""
    if order == "forward":
        h = x @ w1
    elif order == "reversed":
        h = x[:, ::-1] @ w1[::-1]
    else:  # four partial sums added afterwards, as a blocked kernel does
        h = sum(x[:, i:i + 64] @ w1[i:i + 64] for i in range(0, x.shape[1], 64))
    return np.maximum(h, 0).astype(np.float32) @ w2


def test_adaptive_bound_accepts_reordering_and_rejects_a_perturbed_weight():
    """On a model whose fp32 reordering error is above the fixed floor (scaled down here: a floor of 1e-9 plays
    the part of 1e-3 on a deep net), the fixed bound rejects a legitimate kernel; the bound measured from the
    reference's own reordering accepts it and still rejects a conversion with one weight changed."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 256)).astype(np.float32)
    w1 = rng.normal(size=(256, 256)).astype(np.float32)
    w2 = rng.normal(size=(256, 10)).astype(np.float32)
    gate = AccuracyGate(max_rel_error_fp32=1e-9)
    reference = _mlp(x, w1, w2, "forward")
    spread = relative_error(reference, _mlp(x, w1, w2, "reversed"))
    bound = fp32_bound(gate, spread)
    assert spread > 1e-9 and bound == gate.fp32_spread_factor * spread
    legitimate = _mlp(x, w1, w2, "blocked")
    assert not compare_outputs("classification", reference, legitimate, "fp32", gate).passed  # the fixed floor
    assert compare_outputs("classification", reference, legitimate, "fp32", gate, max_rel_fp32=bound).passed
    broken_w1 = w1.copy()
    broken_w1[3, 7] *= 1.01  # one weight off by 1%: a wrong conversion, not rounding
    broken = compare_outputs("classification", reference, _mlp(x, broken_w1, w2, "blocked"), "fp32", gate,
                             max_rel_fp32=bound)
    assert not broken.passed and "relative error" in broken.why
