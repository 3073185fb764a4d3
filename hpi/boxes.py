"""Box geometry: the one IoU and the one greedy NMS, shared by detector post-processing
(:mod:`hpi.models.detector_ops.postprocess`), PP-ShiTuV2's box merging (:mod:`hpi.pipelines.shitu`) and the box
agreement gate (:mod:`hpi.selection.gate`)."""

from __future__ import annotations

import numpy as np


def iou(box: np.ndarray, boxes: np.ndarray, *, normalized: bool = True) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with each row of ``boxes``, as Paddle's NMS computes it (``JaccardOverlap``):
    an inverted box has area 0, and ``normalized=False`` adds the +1 pixel convention."""
    extra = 0.0 if normalized else 1.0

    def area(b: np.ndarray) -> np.ndarray:
        w, h = b[..., 2] - b[..., 0] + extra, b[..., 3] - b[..., 1] + extra
        return np.where((w < 0) | (h < 0), 0.0, w * h)

    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + extra
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + extra
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, *, top_k: int = -1, keep_top_k: int = -1,
        normalized: bool = True) -> np.ndarray:
    """Greedy NMS, the one hpi runs: indices of the boxes kept, best score first.

    Only the ``top_k`` best boxes enter (-1: all); a box is dropped when its IoU with a kept box exceeds
    ``iou_threshold``; at most ``keep_top_k`` are kept (-1: all). One class of Paddle's ``multiclass_nms3``.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    if top_k > -1:
        order = order[:top_k]
    keep: list[int] = []
    for idx in order:
        if len(keep) == keep_top_k:  # checked first: keep_top_k=0 keeps nothing, as "at most 0" says
            break
        if keep and np.any(iou(boxes[idx], boxes[keep], normalized=normalized) > iou_threshold):
            continue
        keep.append(int(idx))
    return np.asarray(keep, dtype=np.int64)
