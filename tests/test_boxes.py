"""hpi/boxes.py: the one IoU and the one greedy NMS, checked against hand-computed values and a brute-force
reference written independently here (pure Python, pair by pair)."""

from __future__ import annotations

import numpy as np
import pytest

from hpi.boxes import iou, nms


def _box(*xyxy: float) -> np.ndarray:
    return np.asarray(xyxy, dtype=np.float64)


def _iou_ref(a: tuple[float, ...], b: tuple[float, ...], normalized: bool) -> float:
    """IoU of two boxes, one at a time: an inverted box (negative width or height) has area 0 and meets nothing."""
    extra = 0.0 if normalized else 1.0

    def area(box: tuple[float, ...]) -> float:
        w, h = box[2] - box[0] + extra, box[3] - box[1] + extra
        return 0.0 if w < 0 or h < 0 else w * h

    iw = min(a[2], b[2]) - max(a[0], b[0]) + extra
    ih = min(a[3], b[3]) - max(a[1], b[1]) + extra
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def _nms_ref(boxes: np.ndarray, scores: np.ndarray, threshold: float, top_k: int, keep_top_k: int,
             normalized: bool) -> list[int]:
    """Greedy NMS by its definition: visit boxes best score first (ties: lower index first), keep a box unless it
    overlaps a kept one by more than the threshold."""
    rows = [tuple(float(v) for v in b) for b in boxes]
    order = sorted(range(len(rows)), key=lambda i: (-float(scores[i]), i))
    if top_k > -1:
        order = order[:top_k]
    kept: list[int] = []
    for i in order:
        if keep_top_k > -1 and len(kept) >= keep_top_k:
            break
        if all(_iou_ref(rows[i], rows[k], normalized) <= threshold for k in kept):
            kept.append(i)
    return kept


# ---------------------------------------------------------------------------------------------------------- IoU


def test_iou_of_known_boxes():
    a = _box(0, 0, 10, 10)
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10], [20, 20, 30, 30], [0, 0, 5, 5]], float)
    # identical; half overlap (50 / 150); touching edge (no area); disjoint; inside (25 / 100)
    np.testing.assert_allclose(iou(a, others), [1.0, 50 / 150, 0.0, 0.0, 0.25])


def test_iou_plus_one_pixel_convention():
    """normalized=False counts pixels inclusively (Paddle's JaccardOverlap): (0,0,9,9) is 10 x 10 pixels."""
    a = _box(0, 0, 9, 9)
    b = np.array([[5, 0, 14, 9]], float)
    assert iou(a, b, normalized=False)[0] == pytest.approx(50 / 150)
    assert iou(a, b)[0] == pytest.approx((4 * 9) / (81 + 81 - 36))  # without it: 9 x 9 boxes, 4 x 9 overlap
    # Boxes that share one pixel column overlap only under the +1 convention.
    touching = np.array([[9, 0, 18, 9]], float)
    assert iou(a, touching)[0] == 0.0
    assert iou(a, touching, normalized=False)[0] == pytest.approx(10 / 190)
    # A single-pixel box is a real box of area 1, not an empty one.
    assert iou(_box(3, 3, 3, 3), np.array([[3, 3, 3, 3]], float), normalized=False)[0] == pytest.approx(1.0)
    assert iou(_box(3, 3, 3, 3), np.array([[3, 3, 3, 3]], float))[0] == 0.0


def test_an_inverted_box_has_no_area_and_overlaps_nothing():
    inverted = _box(10, 10, 0, 0)  # x2 < x1, y2 < y1
    others = np.array([[0, 0, 10, 10], [2, 2, 8, 8], [10, 10, 0, 0]], float)
    np.testing.assert_array_equal(iou(inverted, others), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(iou(_box(0, 0, 10, 10), others[[2]]), [0.0])  # either side
    half_inverted = np.array([[0, 10, 10, 0]], float)  # only y inverted
    assert iou(_box(0, 0, 10, 10), half_inverted)[0] == 0.0
    # Never NaN, even for two empty boxes (0 / 0).
    assert not np.isnan(iou(_box(5, 5, 5, 5), np.array([[5, 5, 5, 5]], float))).any()


def test_iou_is_symmetric_and_matches_the_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    boxes = _random_boxes(rng, 40, inverted_share=0.1)
    for normalized in (True, False):
        matrix = np.stack([iou(b, boxes, normalized=normalized) for b in boxes])
        ref = np.array([[_iou_ref(tuple(a), tuple(b), normalized) for b in boxes] for a in boxes])
        np.testing.assert_allclose(matrix, ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(matrix, matrix.T, rtol=1e-12, atol=1e-12)
        assert ((matrix >= 0) & (matrix <= 1 + 1e-12)).all()


# ---------------------------------------------------------------------------------------------------------- NMS


def test_nms_drops_the_overlapping_lower_score_and_orders_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [100, 100, 110, 110]], float)
    scores = np.array([0.6, 0.9, 0.7, 0.1])
    keep = nms(boxes, scores, 0.5)
    assert keep.dtype == np.int64
    assert keep.tolist() == [1, 2, 3]  # box 0 overlaps box 1 (IoU 0.82) and scores lower
    assert nms(boxes, scores, 0.9).tolist() == [1, 2, 0, 3]  # 0.82 is not above 0.9: both stay


def test_nms_threshold_is_strict():
    """A box is dropped when its IoU *exceeds* the threshold: exactly equal stays (Paddle's ``>``)."""
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], float)  # IoU exactly 1/3
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 1 / 3).tolist() == [0, 1]
    assert nms(boxes, scores, 1 / 3 - 1e-9).tolist() == [0]


def test_nms_pixel_convention_changes_what_overlaps():
    boxes = np.array([[0, 0, 9, 9], [9, 0, 18, 9]], float)  # share one pixel column
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.0).tolist() == [0, 1]  # normalized: they only touch
    assert nms(boxes, scores, 0.0, normalized=False).tolist() == [0]  # pixels: they overlap


def test_nms_keeps_an_inverted_box_and_it_suppresses_nothing():
    boxes = np.array([[0, 0, 10, 10], [10, 10, 0, 0], [0, 0, 10, 10]], float)
    scores = np.array([0.5, 0.9, 0.4])
    # The inverted box scores best; it overlaps nothing, so it neither suppresses box 0 nor is suppressed; box 2
    # duplicates box 0 and goes.
    assert nms(boxes, scores, 0.5).tolist() == [1, 0]


def test_nms_top_k_limits_the_candidates_before_suppression():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    # Only the 2 best enter: box 1 is suppressed, boxes 2 and 3 never enter (not refilled after a suppression).
    assert nms(boxes, scores, 0.5, top_k=2).tolist() == [0]
    assert nms(boxes, scores, 0.5, top_k=0).tolist() == []
    assert nms(boxes, scores, 0.5, top_k=-1).tolist() == [0, 2, 3]


def test_nms_keep_top_k_limits_the_kept_boxes_after_suppression():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # The suppressed box 1 does not count against the limit.
    assert nms(boxes, scores, 0.5, keep_top_k=2).tolist() == [0, 2]
    assert nms(boxes, scores, 0.5, keep_top_k=1).tolist() == [0]
    assert nms(boxes, scores, 0.5, keep_top_k=10).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.5, keep_top_k=0).tolist() == []  # at most 0 (it once meant "all")


def test_nms_ties_keep_the_lower_index_first():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [40, 40, 50, 50]], float)
    scores = np.array([0.5, 0.5, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]


def test_nms_of_nothing():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def _random_boxes(rng: np.random.Generator, n: int, *, inverted_share: float = 0.0) -> np.ndarray:
    """Clustered boxes (so that many overlap) on a 100 x 100 canvas, some inverted."""
    centres = rng.uniform(0, 100, (max(1, n // 6), 2))[rng.integers(0, max(1, n // 6), n)]
    centres += rng.normal(0, 4, (n, 2))
    size = rng.uniform(2, 30, (n, 2))
    boxes = np.concatenate([centres - size / 2, centres + size / 2], axis=1)
    flip = rng.random(n) < inverted_share
    boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]
    return np.round(boxes, 1)  # coarse values: exact ties and shared edges happen


@pytest.mark.parametrize("seed", range(12))
def test_nms_matches_the_brute_force_reference_on_random_boxes(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    boxes = _random_boxes(rng, n, inverted_share=0.05)
    scores = np.round(rng.random(n), 2)  # two decimals: ties in score happen
    for threshold in (0.0, 0.3, 0.5, 0.7):
        for normalized in (True, False):
            for top_k, keep_top_k in ((-1, -1), (n // 2, -1), (-1, 5), (max(1, n // 3), 3), (-1, 0)):
                got = nms(boxes, scores, threshold, top_k=top_k, keep_top_k=keep_top_k, normalized=normalized)
                want = _nms_ref(boxes, scores, threshold, top_k, keep_top_k, normalized)
                assert got.tolist() == want, (threshold, normalized, top_k, keep_top_k)


@pytest.mark.parametrize("seed", range(4))
def test_nms_result_is_a_greedy_fixed_point(seed):
    """Properties of the result whatever the algorithm: kept boxes overlap each other by at most the threshold,
    and every dropped candidate overlaps a better-scored kept box by more."""
    rng = np.random.default_rng(100 + seed)
    boxes = _random_boxes(rng, 60)
    scores = rng.random(60)
    keep = nms(boxes, scores, 0.4, normalized=False).tolist()
    assert scores[keep].tolist() == sorted(scores[keep].tolist(), reverse=True)
    for a in keep:
        for b in keep:
            if a != b:
                assert _iou_ref(tuple(boxes[a]), tuple(boxes[b]), False) <= 0.4
    for d in set(range(60)) - set(keep):
        assert any(scores[k] > scores[d] and _iou_ref(tuple(boxes[d]), tuple(boxes[k]), False) > 0.4 for k in keep)
