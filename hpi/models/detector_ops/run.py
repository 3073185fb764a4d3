"""Running a detection engine on prepared images: batching, feeds, and the three output layouts to rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpi.backends.base import Engine
from hpi.errors import InvalidInputError
from hpi.models.detector_ops.postprocess import decode_picodet_heads, multiclass_nms, nms_per_class_hard
from hpi.models.detector_ops.prepare import PreparedImage, stack_images
from hpi.models.detector_ops.spec import IM_SHAPE_INPUT, IMAGE_INPUT, SCALE_FACTOR_INPUT, DetectionSpec

# ---------------------------------------------------------------------------------------------------------------
# running a detection engine


def batchable(spec: DetectionSpec, engine: Engine) -> bool:
    """Whether one engine call may take several images: undecoded heads and Paddle's own NMS batch fine; an NMS
    graph converted to ONNX takes one image at a time."""
    batch_dim = engine.input_shapes.get(IMAGE_INPUT, [None])[0]
    return batch_dim is None and (spec.raw_heads or engine.backend.capabilities.batched_nms)


def detect_rows(spec: DetectionSpec, engine: Engine, prepared: Sequence[PreparedImage]) -> list[np.ndarray]:
    """Post-NMS detections per prepared image: rows (class_id, score, x1, y1, x2, y2) in original-image pixels,
    before any score threshold or clipping. One engine call for all images where the graph takes batches
    (:func:`batchable`), else one per image. The one path from engine to boxes: :class:`~hpi.models.detection.Detector`
    and measured selection (:mod:`hpi.selection.detection`) both run it."""
    groups = [list(range(len(prepared)))] if batchable(spec, engine) else [[i] for i in range(len(prepared))]
    rows: list[np.ndarray] = [np.zeros((0, 6), np.float32)] * len(prepared)
    for group in groups:
        for i, det in zip(group, _run_batch(spec, engine, [prepared[i] for i in group])):
            rows[i] = det
    return rows


def _run_batch(spec: DetectionSpec, engine: Engine, prepared: list[PreparedImage]) -> list[np.ndarray]:
    """Run one batch; per image the (class_id, score, x1, y1, x2, y2) rows in original-image pixels."""
    batch = stack_images(prepared)
    feed = {IMAGE_INPUT: batch}
    scale = np.array([p.scale_factor for p in prepared], dtype=np.float32)
    if SCALE_FACTOR_INPUT in engine.input_names:
        feed[SCALE_FACTOR_INPUT] = scale
    if IM_SHAPE_INPUT in engine.input_names:
        feed[IM_SHAPE_INPUT] = np.array([p.im_shape for p in prepared], dtype=np.float32)
    outputs = engine.run(feed)
    scaled_in_graph = SCALE_FACTOR_INPUT in engine.input_names
    if spec.raw_heads:
        return _from_raw_heads(spec, outputs, prepared, batch.shape[2:])
    nms_rows = [o for o in outputs if o.ndim == 2 and o.shape[-1] == 6]
    if nms_rows:
        per_image = _split_by_count(nms_rows[0], [o for o in outputs if o.ndim == 1], len(prepared),
                                    spec.model_name)
    elif len(outputs) >= 2 and outputs[0].ndim == 3 and outputs[0].shape[-1] == 4 and outputs[1].ndim == 3:
        rows, counts = multiclass_nms(outputs[0], outputs[1], spec.nms)
        per_image = _split_by_count(rows, [counts], len(prepared), spec.model_name)
    else:
        shapes = [list(o.shape) for o in outputs]
        raise InvalidInputError(
            f"{spec.model_name}: unrecognised detector outputs {shapes}; expected boxes [M, 6] with boxes_num [N] "
            "(NMS in the graph), boxes [N, L, 4] with scores [N, C, L], or undecoded PicoDet heads "
            "(inference.yml arch: PicoDet with fpn_stride)"
        )
    if not scaled_in_graph:
        per_image = [_unscale(rows, p.scale_factor) for rows, p in zip(per_image, prepared)]
    return per_image


def _from_raw_heads(spec: DetectionSpec, outputs: list[np.ndarray], prepared: list[PreparedImage],
                    input_hw: tuple[int, int]) -> list[np.ndarray]:
    strides = spec.fpn_stride or ()
    half = len(outputs) // 2
    if len(outputs) != 2 * len(strides):
        raise InvalidInputError(
            f"{spec.model_name}: {len(outputs)} outputs for fpn_stride {list(strides)}; undecoded PicoDet heads "
            "give one score and one box output per stride"
        )
    candidates = decode_picodet_heads(outputs[:half], outputs[half:], (int(input_hw[0]), int(input_hw[1])),
                                      strides, spec.nms)
    per_image = []
    for (boxes, scores), p in zip(candidates, prepared):
        h, w = p.im_shape
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        per_image.append(_unscale(nms_per_class_hard(boxes, scores, spec.nms), p.scale_factor))
    return per_image


def _unscale(rows: np.ndarray, scale_factor: tuple[float, float]) -> np.ndarray:
    out = rows.copy()
    sy, sx = scale_factor
    out[:, [2, 4]] /= sx
    out[:, [3, 5]] /= sy
    return out


def _split_by_count(rows: np.ndarray, counts: list[np.ndarray], images: int, name: str) -> list[np.ndarray]:
    if counts:
        num = counts[0].astype(np.int64).reshape(-1)
    elif images == 1:
        num = np.array([len(rows)])
    else:
        raise InvalidInputError(f"{name}: the detector returned boxes without boxes_num for a batch of {images}")
    if len(num) != images or num.sum() > len(rows):
        raise InvalidInputError(
            f"{name}: boxes_num {num.tolist()} does not match {len(rows)} boxes for {images} image(s)"
        )
    bounds = np.concatenate([[0], np.cumsum(num)])
    return [rows[bounds[i]:bounds[i + 1]] for i in range(images)]
