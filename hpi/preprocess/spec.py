"""One declarative preprocessing spec, parsed from PaddleX's ``PreProcess.transform_ops``.

PaddleX classification models describe their input pipeline in ``inference.yml``::

    PreProcess:
      transform_ops:
      - ResizeImage: {resize_short: 256}          # or {size: 224} / {size: [w, h]}, interpolation
      - CropImage: {size: 224}                    # centre crop
      - NormalizeImage: {mean: [...], std: [...], scale: 1/255, order: '', channel_num: 3}
      - ToCHWImage: null

PaddleX reads images as RGB and applies the ops in that order, so this spec fixes the semantics every
realisation must reproduce (the reference chain, the fused CPU kernel and the in-graph prefix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpi.errors import ModelSourceError

INTERPOLATIONS = ("NEAREST", "LINEAR", "BICUBIC", "AREA", "LANCZOS4")
_INTERP_ALIASES = {"BILINEAR": "LINEAR", "CUBIC": "BICUBIC", "LANCZOS": "LANCZOS4"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the one definition: every default mean/std in hpi comes from here
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    """What happens between a decoded RGB uint8 HWC image and the model's float32 input."""

    resize_short: int | None  # scale so the short side is this long (aspect kept); exclusive with resize_to
    resize_to: tuple[int, int] | None  # resize to exactly (width, height)
    interpolation: str  # one of INTERPOLATIONS (OpenCV names, as PaddleX uses)
    crop: tuple[int, int] | None  # centre crop (width, height) after resizing
    mean: tuple[float, float, float]  # per channel, RGB order, after scaling
    std: tuple[float, float, float]
    scale: float  # multiply uint8 values by this first (1/255 for PaddleX models)
    channels_first: bool  # ToCHWImage present: the model takes NCHW
    resize_backend: str = "cv2"  # "cv2" or "pil": the library PaddleX resizes with (ResizeImage.backend)

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(width, height) of the model input when fixed by the ops, else None."""
        if self.crop is not None:
            return self.crop
        return self.resize_to

    @classmethod
    def from_transform_ops(cls, ops: Any, where: str = "PreProcess.transform_ops") -> PreprocessSpec:
        """Parse PaddleX's op list; every error names the offending key."""
        if not isinstance(ops, list) or not ops:
            raise ModelSourceError(f"{where}: expected a non-empty list of ops, got {type(ops).__name__}")
        fields: dict[str, Any] = {
            "resize_short": None,
            "resize_to": None,
            "interpolation": "LINEAR",
            "crop": None,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "scale": 1.0 / 255.0,
            "channels_first": False,
            "resize_backend": "cv2",
        }
        seen_normalize = False
        for i, op in enumerate(ops):
            key = f"{where}[{i}]"
            if isinstance(op, str):
                name, args = op, {}
            elif isinstance(op, dict) and len(op) == 1:
                name, args = next(iter(op.items()))
                args = args or {}
            else:
                raise ModelSourceError(f"{key}: expected a one-key mapping like {{ResizeImage: {{...}}}}, got {op!r}")
            if not isinstance(args, dict):
                raise ModelSourceError(f"{key}.{name}: expected a mapping of arguments, got {args!r}")
            if name == "ResizeImage":
                _parse_resize(args, f"{key}.ResizeImage", fields)
            elif name == "CropImage":
                fields["crop"] = _size_pair(args.get("size", 224), f"{key}.CropImage.size")
            elif name == "NormalizeImage":
                _parse_normalize(args, f"{key}.NormalizeImage", fields)
                seen_normalize = True
            elif name == "ToCHWImage":
                fields["channels_first"] = True
            else:
                raise ModelSourceError(
                    f"{key}: unsupported op {name!r}; supported: ResizeImage, CropImage, NormalizeImage, ToCHWImage"
                )
        if fields["resize_short"] is None and fields["resize_to"] is None:
            raise ModelSourceError(f"{where}: no ResizeImage op; hpi needs a fixed model input size")
        if not seen_normalize:
            raise ModelSourceError(f"{where}: no NormalizeImage op")
        return cls(**fields)

    def to_transform_ops(self) -> list[dict[str, Any]]:
        """The inverse of :meth:`from_transform_ops`, in PaddleX's layout (used when writing inference.yml)."""
        resize: dict[str, Any] = (
            {"resize_short": self.resize_short} if self.resize_short else {"size": list(self.resize_to or ())}
        )
        if self.interpolation != "LINEAR":
            resize["interpolation"] = self.interpolation
        if self.resize_backend != "cv2":
            resize["backend"] = self.resize_backend
        ops: list[dict[str, Any]] = [{"ResizeImage": resize}]
        if self.crop:
            ops.append({"CropImage": {"size": self.crop[0] if self.crop[0] == self.crop[1] else list(self.crop)}})
        ops.append(
            {
                "NormalizeImage": {
                    "channel_num": 3,
                    "mean": list(self.mean),
                    "std": list(self.std),
                    "scale": self.scale,
                    "order": "",
                }
            }
        )
        if self.channels_first:
            ops.append({"ToCHWImage": None})
        return ops


def _parse_resize(args: dict[str, Any], key: str, fields: dict[str, Any]) -> None:
    short, size = args.get("resize_short"), args.get("size")
    if (short is None) == (size is None):
        raise ModelSourceError(f"{key}: give exactly one of 'resize_short' or 'size'")
    if short is not None:
        if not isinstance(short, int) or short <= 0:
            raise ModelSourceError(f"{key}.resize_short: expected a positive integer, got {short!r}")
        fields["resize_short"] = short
    else:
        fields["resize_to"] = _size_pair(size, f"{key}.size")
    interp = str(args.get("interpolation") or "LINEAR").upper()
    interp = _INTERP_ALIASES.get(interp, interp)
    if interp not in INTERPOLATIONS:
        raise ModelSourceError(f"{key}.interpolation: {interp!r} is not one of {', '.join(INTERPOLATIONS)}")
    backend = args.get("backend") or "cv2"
    if backend not in ("cv2", "pil"):
        raise ModelSourceError(f"{key}.backend: expected 'cv2' or 'pil', got {backend!r}")
    fields["interpolation"] = interp
    fields["resize_backend"] = backend


def _parse_normalize(args: dict[str, Any], key: str, fields: dict[str, Any]) -> None:
    if args.get("channel_num", 3) != 3:
        raise ModelSourceError(f"{key}.channel_num: only 3 channels are supported, got {args['channel_num']!r}")
    order = args.get("order", "")
    if order not in ("", "hwc"):
        raise ModelSourceError(f"{key}.order: only '' or 'hwc' is supported, got {order!r}")
    for name in ("mean", "std"):
        value = args.get(name, fields[name])
        if isinstance(value, (int, float)):
            value = [float(value)] * 3
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ModelSourceError(f"{key}.{name}: expected 3 numbers, got {value!r}")
        try:
            fields[name] = tuple(float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise ModelSourceError(f"{key}.{name}: expected numbers, got {value!r}") from exc
    if any(s == 0 for s in fields["std"]):
        raise ModelSourceError(f"{key}.std: must not contain zero")
    scale = args.get("scale", fields["scale"])
    if isinstance(scale, str):  # PaddleClas configs write "1.0/255.0"
        try:
            num, _, den = scale.partition("/")
            scale = float(num) / float(den) if den else float(num)
        except ValueError as exc:
            raise ModelSourceError(f"{key}.scale: cannot read {scale!r} as a number") from exc
    if not isinstance(scale, (int, float)) or scale <= 0:
        raise ModelSourceError(f"{key}.scale: expected a positive number, got {scale!r}")
    fields["scale"] = float(scale)


def _size_pair(value: Any, key: str) -> tuple[int, int]:
    if isinstance(value, int) and value > 0:
        return (value, value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and v > 0 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ModelSourceError(f"{key}: expected a positive integer or [width, height], got {value!r}")
