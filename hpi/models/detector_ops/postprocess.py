"""A detector's raw outputs to boxes in numpy: Paddle's ``multiclass_nms3`` and PicoDet's undecoded heads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpi.boxes import nms
from hpi.errors import InvalidInputError
from hpi.models.detector_ops.spec import NmsSettings

DEFAULT_NMS = NmsSettings()  # multiclass_nms3's own defaults
HARD_NMS_CANDIDATES = 200  # PaddleDetection's hard_nms looks at the 200 best boxes of a class

# ---------------------------------------------------------------------------------------------------------------
# post-processing in numpy


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, settings: NmsSettings = DEFAULT_NMS
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Paddle's ``multiclass_nms3`` in numpy (tested against the op).

    Per image and class: candidates scoring above ``score_threshold``, the best ``nms_top_k`` of them, greedy
    :func:`nms`; then the best ``keep_top_k`` over all classes. Rows come grouped by image, then by class id, best
    score first, as the Paddle op writes them.

    Args:
        boxes: [N, M, 4] (x1, y1, x2, y2), shared by all classes.
        scores: [N, C, M] class scores.
        settings: thresholds and limits.

    Returns:
        ``(out, boxes_num)``: out [K, 6] float32 rows (class_id, score, x1, y1, x2, y2), boxes_num [N] int32.

    Raises:
        InvalidInputError: the arrays do not have these shapes.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[::2] != boxes.shape[:2]:
        raise InvalidInputError(
            f"multiclass_nms: expected boxes [N, M, 4] and scores [N, C, M], got {boxes.shape} and {scores.shape}"
        )
    rows: list[np.ndarray] = []
    counts: list[int] = []
    for img_boxes, img_scores in zip(boxes, scores):
        kept: list[tuple[int, float, int]] = []  # (class, score, box index)
        for cls, cls_scores in enumerate(img_scores):
            cand = np.flatnonzero(cls_scores > settings.score_threshold)
            keep = nms(img_boxes[cand], cls_scores[cand], settings.nms_threshold, top_k=settings.nms_top_k,
                       normalized=settings.normalized)
            kept.extend((cls, float(cls_scores[cand[k]]), int(cand[k])) for k in keep)
        if settings.keep_top_k > -1 and len(kept) > settings.keep_top_k:
            best = sorted(range(len(kept)), key=lambda k: -kept[k][1])[: settings.keep_top_k]
            kept = [kept[k] for k in sorted(best, key=lambda k: (kept[k][0], -kept[k][1]))]
        counts.append(len(kept))
        rows.extend(np.array([cls, score, *img_boxes[i]], dtype=np.float32) for cls, score, i in kept)
    out = np.stack(rows) if rows else np.zeros((0, 6), dtype=np.float32)
    return out, np.array(counts, dtype=np.int32)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def decode_picodet_heads(
    scores: Sequence[np.ndarray],
    distributions: Sequence[np.ndarray],
    input_hw: tuple[int, int],
    strides: Sequence[int],
    settings: NmsSettings,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decode undecoded PicoDet heads into candidate boxes in input-image pixels, per image.

    Args:
        scores: per level [N, H*W, C] class scores (sigmoid already applied in the graph).
        distributions: per level [N, H*W, 4 * (reg_max + 1)] box-side logits (left, top, right, bottom).
        input_hw: height and width of the image tensor the model ran on.
        strides: the level strides (``fpn_stride``).
        settings: ``nms_top_k`` is the number of anchors kept per level.

    Returns:
        Per image ``(boxes [K, 4], scores [K, C])``.
    """
    if len(scores) != len(strides) or len(distributions) != len(strides):
        raise InvalidInputError(
            f"the detector returned {len(scores)} score and {len(distributions)} box outputs for "
            f"{len(strides)} strides (fpn_stride {list(strides)})"
        )
    batch = scores[0].shape[0]
    per_image: list[tuple[np.ndarray, np.ndarray]] = []
    for n in range(batch):
        level_boxes, level_scores = [], []
        for stride, score, dist in zip(strides, scores, distributions):
            grid_h, grid_w = -(-input_hw[0] // stride), -(-input_hw[1] // stride)
            score, dist = score[n], dist[n]
            if score.shape[0] != grid_h * grid_w or dist.shape[0] != grid_h * grid_w or dist.shape[-1] % 4:
                raise InvalidInputError(
                    f"stride {stride}: expected {grid_h * grid_w} anchors for a {input_hw[0]}x{input_hw[1]} input, "
                    f"got scores {list(score.shape)} and box distributions {list(dist.shape)}"
                )
            bins = dist.shape[-1] // 4
            sides = _softmax(dist.reshape(-1, 4, bins).astype(np.float32), axis=-1) @ np.arange(bins, dtype=np.float32)
            ys, xs = np.divmod(np.arange(grid_h * grid_w), grid_w)
            cx, cy = (xs + 0.5) * stride, (ys + 0.5) * stride
            top = np.argsort(-score.max(axis=1), kind="stable")
            if settings.nms_top_k > -1:
                top = top[: settings.nms_top_k]
            sides = sides[top] * stride
            level_boxes.append(np.stack(
                [cx[top] - sides[:, 0], cy[top] - sides[:, 1], cx[top] + sides[:, 2], cy[top] + sides[:, 3]], axis=1
            ))
            level_scores.append(score[top])
        per_image.append((np.concatenate(level_boxes).astype(np.float32),
                          np.concatenate(level_scores).astype(np.float32)))
    return per_image


def nms_per_class_hard(boxes: np.ndarray, scores: np.ndarray, settings: NmsSettings) -> np.ndarray:
    """PaddleDetection's PicoDet NMS: per class, scores above ``score_threshold``, hard NMS over the 200 best,
    at most ``keep_top_k`` per class. Returns rows (class_id, score, x1, y1, x2, y2), class by class."""
    rows = []
    for cls in range(scores.shape[1]):
        mask = scores[:, cls] > settings.score_threshold
        if not mask.any():
            continue
        cls_boxes, cls_scores = boxes[mask], scores[mask, cls]
        keep = nms(cls_boxes, cls_scores, settings.nms_threshold, top_k=HARD_NMS_CANDIDATES,
                   keep_top_k=settings.keep_top_k, normalized=settings.normalized)
        rows.append(np.column_stack([np.full(len(keep), cls, np.float32), cls_scores[keep], cls_boxes[keep]]))
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 6), np.float32)
