"""A PaddleDetection export's ``inference.yml`` (``infer_cfg``), parsed into a typed :class:`DetectionSpec`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2

from hpi.errors import ModelSourceError
from hpi.preprocess.spec import IMAGENET_MEAN, IMAGENET_STD
from hpi.source import ModelSource

IMAGE_INPUT = "image"
SCALE_FACTOR_INPUT = "scale_factor"
IM_SHAPE_INPUT = "im_shape"
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
    for name, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
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
