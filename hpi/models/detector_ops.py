"""What a PaddleDetection export means, apart from running it: its ``inference.yml``, how an image is prepared for
it, and how its outputs become boxes. :mod:`hpi.models.detection` runs it as a model; measured selection
(:mod:`hpi.selection.detection`) prepares and judges detector inputs and outputs with the same functions, without
importing the model layer (which imports the backend choice).

A PaddleDetection export carries an ``inference.yml`` (``infer_cfg``) with a top-level ``Preprocess`` list::

    arch: PicoDet                # "GFL" when post-processing (decode + NMS) is inside the graph
    draw_threshold: 0.5          # default score threshold of the results
    Preprocess:
    - {type: Resize, target_size: [800, 608], keep_ratio: false, interp: 2}
    - {type: NormalizeImage, is_scale: true, mean: [...], std: [...]}
    - {type: Permute}
    label_list: [text, title, ...]
    NMS: {score_threshold: 0.3, nms_threshold: 0.5, nms_top_k: 1000, keep_top_k: 100}
    fpn_stride: [8, 16, 32, 64]  # written when the head's outputs are exported undecoded

The graph takes ``image`` [N, 3, H, W] float32 and, when it has them, ``scale_factor`` [N, 2] = (resized_h /
original_h, resized_w / original_w) and ``im_shape`` [N, 2] = (resized_h, resized_w). Three output layouts exist,
and :func:`detect_rows` handles each:

* **NMS in the graph** (PaddleX's PP-ShiTuV2_det, any ``export.nms: true`` model): ``boxes`` [M, 6] rows of
  (class_id, score, x1, y1, x2, y2) in original-image pixels, grouped by image, and ``boxes_num`` [N].
* **decoded, without NMS** (``export.nms: false``): boxes [N, L, 4] and scores [N, C, L]; NMS runs here with
  :func:`multiclass_nms`, Paddle's ``multiclass_nms3`` (per class, then the best ``keep_top_k`` over all classes).
* **undecoded PicoDet heads** (``arch: PicoDet``, ``export.post_process: false``, e.g. the layout models): per
  stride, class scores [N, H*W, C] (already sigmoid) followed by box distributions [N, H*W, 4 * (reg_max + 1)].
  They are decoded here as PaddleDetection's deploy ``PicoDetPostProcess`` does: the best ``nms_top_k`` anchors
  per level, box sides as the expectation of a softmax over the bins times the stride around each cell centre,
  per class hard NMS over the 200 best candidates keeping at most ``keep_top_k`` (the same greedy :func:`nms`),
  boxes clipped to the resized image and divided by the scale factor.

Results are PaddleX's: ``{input_path, page_index, boxes: [{cls_id, label, score, coordinate}]}`` with
``coordinate`` = [xmin, ymin, xmax, ymax] in original-image pixels, clipped to the image, best score first.
"""


from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np

from hpi.backends.base import Engine
from hpi.boxes import iou
from hpi.errors import InvalidInputError, ModelSourceError
from hpi.source import ModelSource

IMAGE_INPUT = "image"
SCALE_FACTOR_INPUT = "scale_factor"
IM_SHAPE_INPUT = "im_shape"
HARD_NMS_CANDIDATES = 200  # PaddleDetection's hard_nms looks at the 200 best boxes of a class
_CV2_INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_LANCZOS4)


# ---------------------------------------------------------------------------------------------------------------
# inference.yml (PaddleDetection's infer_cfg)


@dataclass(frozen=True)
class ResizeOp:
    """``Resize``: to ``target_size`` exactly, or (``keep_ratio``) as large as fits, aspect kept."""

    target_size: tuple[int, int]  # (height, width), as PaddleDetection writes it
    keep_ratio: bool
    interp: int  # an OpenCV interpolation flag (PaddleDetection writes cv2's numbers; 2 is bicubic)


@dataclass(frozen=True)
class NormalizeOp:
    """``NormalizeImage``: optionally scale to [0, 1], then subtract ``mean`` and divide by ``std`` (RGB order)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    is_scale: bool  # divide by 255 first
    subtract_mean: bool  # norm_type "mean_std" (default); "none" skips mean/std


@dataclass(frozen=True)
class PermuteOp:
    """``Permute``: HWC to CHW."""


@dataclass(frozen=True)
class PadStrideOp:
    """``PadStride``: zero-pad bottom/right to a multiple of ``stride`` (``im_shape`` keeps the unpadded size)."""

    stride: int


PreprocessOp = ResizeOp | NormalizeOp | PermuteOp | PadStrideOp


@dataclass(frozen=True)
class NmsSettings:
    """The ``NMS`` block of ``inference.yml`` (used where NMS runs outside the graph)."""

    score_threshold: float = 0.3  # candidates at or below this score are dropped before NMS
    nms_threshold: float = 0.5  # IoU above which the lower-scoring box of a class is suppressed
    nms_top_k: int = 1000  # undecoded heads: anchors kept per level; decoded boxes: candidates per class
    keep_top_k: int = 100  # undecoded heads: boxes per class; decoded boxes: boxes per image (-1: all)
    normalized: bool = True  # IoU without the +1 pixel convention (multiclass_nms3's ``normalized``)


@dataclass(frozen=True)
class DetectionSpec:
    """The parts of a PaddleDetection ``inference.yml`` the detection predictor acts on."""

    model_name: str  # Global.model_name
    arch: str | None  # "PicoDet" marks undecoded head outputs; "GFL" and others decode in the graph
    ops: tuple[PreprocessOp, ...]  # Preprocess, in order
    labels: tuple[str, ...] | None  # label_list: class names by id
    draw_threshold: float  # default score threshold of results
    nms: NmsSettings
    fpn_stride: tuple[int, ...] | None  # strides of the undecoded head levels

    @property
    def raw_heads(self) -> bool:
        """True when the graph outputs undecoded PicoDet heads (decoding and NMS run here)."""
        return self.arch == "PicoDet"

    def label(self, cls_id: int) -> str:
        if self.labels is not None and 0 <= cls_id < len(self.labels):
            return self.labels[cls_id]
        return str(cls_id)

    @classmethod
    def from_source(cls, source: ModelSource) -> DetectionSpec:
        if source.spec.task != "detection":
            raise ModelSourceError(
                f"{source.config_file}: {source.name} is a {source.spec.task} model, not a detector "
                "(a detector's inference.yml has a top-level 'Preprocess' list)"
            )
        try:
            return cls.from_mapping(source.spec.raw)
        except ModelSourceError as exc:
            raise ModelSourceError(f"{source.config_file}: {exc}") from None

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> DetectionSpec:
        """Parse a PaddleDetection ``infer_cfg``; every error names the offending key."""
        glob = cfg.get("Global")
        if not isinstance(glob, Mapping) or not isinstance(glob.get("model_name"), str):
            raise ModelSourceError("Global.model_name: missing or not a string")
        ops = _parse_ops(cfg.get("Preprocess"))
        labels = cfg.get("label_list")
        if labels is not None:
            if not isinstance(labels, list) or not labels:
                raise ModelSourceError(f"label_list: expected a non-empty list of names, got {labels!r}")
            labels = tuple(str(x) for x in labels)
        draw = cfg.get("draw_threshold", 0.5)
        if not is_number(draw) or not 0 <= draw <= 1:
            raise ModelSourceError(f"draw_threshold: expected a number in [0, 1], got {draw!r}")
        arch = cfg.get("arch")
        if arch is not None and not isinstance(arch, str):
            raise ModelSourceError(f"arch: expected a string, got {arch!r}")
        strides = cfg.get("fpn_stride")
        if strides is not None:
            if not isinstance(strides, list) or not strides or not all(_is_pos_int(s) for s in strides):
                raise ModelSourceError(f"fpn_stride: expected a list of positive integers, got {strides!r}")
            strides = tuple(int(s) for s in strides)
        if arch == "PicoDet" and strides is None:
            raise ModelSourceError("fpn_stride: missing; arch PicoDet (undecoded head outputs) needs the strides")
        return cls(
            model_name=glob["model_name"],
            arch=arch,
            ops=ops,
            labels=labels,
            draw_threshold=float(draw),
            nms=_parse_nms(cfg.get("NMS")),
            fpn_stride=strides,
        )


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_pos_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _parse_ops(ops: Any) -> tuple[PreprocessOp, ...]:
    if not isinstance(ops, list) or not ops:
        raise ModelSourceError(f"Preprocess: expected a non-empty list of ops, got {ops!r}")
    parsed: list[PreprocessOp] = []
    for i, op in enumerate(ops):
        key = f"Preprocess[{i}]"
        if not isinstance(op, Mapping) or not isinstance(op.get("type"), str):
            raise ModelSourceError(f"{key}: expected a mapping with a 'type', got {op!r}")
        kind = op["type"]
        args = {k: v for k, v in op.items() if k != "type"}
        if kind == "Resize":
            parsed.append(_parse_resize(args, f"{key}.Resize"))
        elif kind == "NormalizeImage":
            parsed.append(_parse_normalize(args, f"{key}.NormalizeImage"))
        elif kind == "Permute":
            parsed.append(PermuteOp())
        elif kind == "PadStride":
            stride = args.get("stride", 0)
            if not isinstance(stride, int) or isinstance(stride, bool) or stride < 0:
                raise ModelSourceError(f"{key}.PadStride.stride: expected a non-negative integer, got {stride!r}")
            if stride > 0:
                parsed.append(PadStrideOp(stride))
        else:
            raise ModelSourceError(
                f"{key}.type: unsupported op {kind!r}; supported: Resize, NormalizeImage, Permute, PadStride"
            )
    if not any(isinstance(op, ResizeOp) for op in parsed):
        raise ModelSourceError("Preprocess: no Resize op; hpi needs a known model input size")
    if not any(isinstance(op, PermuteOp) for op in parsed):
        raise ModelSourceError("Preprocess: no Permute op; the detector takes CHW images")
    return tuple(parsed)


def _parse_resize(args: dict[str, Any], key: str) -> ResizeOp:
    size = args.get("target_size")
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    if not isinstance(size, list | tuple) or len(size) != 2 or not all(_is_pos_int(s) for s in size):
        raise ModelSourceError(f"{key}.target_size: expected [height, width] of positive integers, got {size!r}")
    keep_ratio = args.get("keep_ratio", True)
    if not isinstance(keep_ratio, bool):
        raise ModelSourceError(f"{key}.keep_ratio: expected true or false, got {keep_ratio!r}")
    interp = args.get("interp", cv2.INTER_LINEAR)
    if interp not in _CV2_INTERPOLATIONS or isinstance(interp, bool):
        raise ModelSourceError(f"{key}.interp: expected an OpenCV interpolation code 0-4, got {interp!r}")
    unknown = sorted(set(args) - {"target_size", "keep_ratio", "interp"})
    if unknown:
        raise ModelSourceError(f"{key}: unknown key(s) {unknown}; known: interp, keep_ratio, target_size")
    return ResizeOp((int(size[0]), int(size[1])), keep_ratio, int(interp))


def _parse_normalize(args: dict[str, Any], key: str) -> NormalizeOp:
    values = {}
    for name, default in (("mean", (0.485, 0.456, 0.406)), ("std", (0.229, 0.224, 0.225))):
        value = args.get(name, default)
        if not isinstance(value, list | tuple) or len(value) != 3 or not all(is_number(v) for v in value):
            raise ModelSourceError(f"{key}.{name}: expected 3 numbers, got {value!r}")
        values[name] = tuple(float(v) for v in value)
    if any(s == 0 for s in values["std"]):
        raise ModelSourceError(f"{key}.std: must not contain zero")
    is_scale = args.get("is_scale", True)
    if not isinstance(is_scale, bool):
        raise ModelSourceError(f"{key}.is_scale: expected true or false, got {is_scale!r}")
    norm_type = args.get("norm_type", "mean_std")
    if norm_type not in ("mean_std", "none"):
        raise ModelSourceError(f"{key}.norm_type: expected 'mean_std' or 'none', got {norm_type!r}")
    return NormalizeOp(values["mean"], values["std"], is_scale, norm_type == "mean_std")


def _parse_nms(nms: Any) -> NmsSettings:
    if nms is None:
        return NmsSettings()
    if not isinstance(nms, Mapping):
        raise ModelSourceError(f"NMS: expected a mapping, got {nms!r}")
    fields: dict[str, Any] = {}
    for name in ("score_threshold", "nms_threshold"):
        if name in nms:
            if not is_number(nms[name]):
                raise ModelSourceError(f"NMS.{name}: expected a number, got {nms[name]!r}")
            fields[name] = float(nms[name])
    for name in ("nms_top_k", "keep_top_k"):
        if name in nms:
            value = nms[name]
            if not isinstance(value, int) or isinstance(value, bool) or value == 0 or value < -1:
                raise ModelSourceError(f"NMS.{name}: expected a positive integer or -1, got {value!r}")
            fields[name] = value
    if "normalized" in nms:
        if not isinstance(nms["normalized"], bool):
            raise ModelSourceError(f"NMS.normalized: expected true or false, got {nms['normalized']!r}")
        fields["normalized"] = nms["normalized"]
    return NmsSettings(**fields)


# ---------------------------------------------------------------------------------------------------------------
# preprocessing


class PreparedImage(NamedTuple):
    """One image as the detector takes it."""

    image: np.ndarray  # float32 CHW (HWC if the spec has no Permute)
    im_shape: tuple[float, float]  # (height, width) after resizing, before padding
    scale_factor: tuple[float, float]  # (resized_h / original_h, resized_w / original_w)


def resized_shape(op: ResizeOp, height: int, width: int) -> tuple[int, int]:
    """(height, width) after ``op``: the target exactly, or the largest aspect-kept size within it."""
    if not op.keep_ratio:
        return op.target_size
    target_min, target_max = min(op.target_size), max(op.target_size)
    scale = min(target_min / min(height, width), target_max / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def prepare_image(spec: DetectionSpec, rgb: np.ndarray) -> PreparedImage:
    """Run the spec's ``Preprocess`` ops on one RGB uint8 HWC image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidInputError(f"expected an RGB uint8 image [H, W, 3], got {rgb.dtype} {list(rgb.shape)}")
    height, width = rgb.shape[:2]
    img: np.ndarray = rgb
    im_shape = (float(height), float(width))
    scale = (1.0, 1.0)
    channels_first = False
    for op in spec.ops:
        if isinstance(op, ResizeOp):
            h, w = img.shape[:2]
            new_h, new_w = resized_shape(op, h, w)
            img = cv2.resize(img, (new_w, new_h), interpolation=op.interp)
            scale = (scale[0] * new_h / h, scale[1] * new_w / w)
            im_shape = (float(new_h), float(new_w))
        elif isinstance(op, NormalizeOp):
            out = img.astype(np.float32)
            if op.is_scale:
                out *= np.float32(1.0 / 255.0)
            if op.subtract_mean:
                out -= np.asarray(op.mean, dtype=np.float32)
                out /= np.asarray(op.std, dtype=np.float32)
            img = out
        elif isinstance(op, PermuteOp):
            img = img.transpose(2, 0, 1)
            channels_first = True
        elif isinstance(op, PadStrideOp):
            h, w = (img.shape[1:] if channels_first else img.shape[:2])
            ph, pw = -(-h // op.stride) * op.stride, -(-w // op.stride) * op.stride
            if (ph, pw) != (h, w):
                pad = ((0, 0), (0, ph - h), (0, pw - w)) if channels_first else ((0, ph - h), (0, pw - w), (0, 0))
                img = np.pad(img, pad)
    return PreparedImage(np.ascontiguousarray(img, dtype=np.float32), im_shape, scale)


def stack_images(prepared: Sequence[PreparedImage]) -> np.ndarray:
    """One CHW batch; images of different sizes are zero-padded bottom/right to the largest."""
    shapes = {p.image.shape for p in prepared}
    if len(shapes) == 1:
        return np.ascontiguousarray(np.stack([p.image for p in prepared]))
    c = prepared[0].image.shape[0]
    h = max(p.image.shape[1] for p in prepared)
    w = max(p.image.shape[2] for p in prepared)
    batch = np.zeros((len(prepared), c, h, w), dtype=np.float32)
    for row, p in zip(batch, prepared):
        row[:, : p.image.shape[1], : p.image.shape[2]] = p.image
    return batch


# ---------------------------------------------------------------------------------------------------------------
# post-processing in numpy


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
        if keep and np.any(iou(boxes[idx], boxes[keep], normalized=normalized) > iou_threshold):
            continue
        keep.append(int(idx))
        if len(keep) == keep_top_k:
            break
    return np.asarray(keep, dtype=np.int64)


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, settings: NmsSettings = NmsSettings()
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
