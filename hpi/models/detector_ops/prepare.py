"""An image prepared as a PaddleDetection export expects it: resized, normalised, laid out, with its scale factor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

from hpi.errors import InvalidInputError
from hpi.models.detector_ops.spec import DetectionSpec, NormalizeOp, PadStrideOp, PermuteOp, ResizeOp

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
