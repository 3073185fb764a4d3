"""hpi/selection/gate.py: the accuracy gate's thresholds."""

from __future__ import annotations

import numpy as np

from hpi.config import AccuracyGate
from hpi.selection.gate import compare_outputs


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
