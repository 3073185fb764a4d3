"""PaddleX's classification op chain, written plainly: the ground truth the fast paths are tested against.

Per image: resize (by short side, rounding half to even like Python's ``round``), centre crop, ``x * scale / std -
mean / std`` in float32 per channel, HWC to CHW; then stack. Inputs are RGB uint8 HWC arrays.
"""

from __future__ import annotations

import cv2
import numpy as np

from hpi.errors import InvalidInputError
from hpi.preprocess.spec import PreprocessSpec

CV2_INTERPOLATION = {
    "NEAREST": cv2.INTER_NEAREST,
    "LINEAR": cv2.INTER_LINEAR,
    "BICUBIC": cv2.INTER_CUBIC,
    "AREA": cv2.INTER_AREA,
    "LANCZOS4": cv2.INTER_LANCZOS4,
}


def _pil_resize(rgb: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """PaddleX's ``backend: pil`` resize: through a PIL image and back."""
    from PIL import Image

    filters = {"NEAREST": Image.NEAREST, "LINEAR": Image.BILINEAR, "BICUBIC": Image.BICUBIC,
               "AREA": Image.BOX, "LANCZOS4": Image.LANCZOS}
    return np.asarray(Image.fromarray(rgb).resize(size, filters[interpolation]))


def resize(spec: PreprocessSpec, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height) with the library and filter the spec names."""
    if spec.resize_backend == "pil":
        return _pil_resize(rgb, size, spec.interpolation)
    return cv2.resize(rgb, size, interpolation=CV2_INTERPOLATION[spec.interpolation])


def resized_size(spec: PreprocessSpec, width: int, height: int) -> tuple[int, int]:
    """(width, height) after the spec's resize step."""
    if spec.resize_short is not None:
        scale = spec.resize_short / min(height, width)
        return round(width * scale), round(height * scale)
    assert spec.resize_to is not None  # guaranteed by PreprocessSpec.from_transform_ops
    return spec.resize_to


def crop_box(spec: PreprocessSpec, width: int, height: int) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the centre crop in the resized image; the whole image when there is no crop."""
    if spec.crop is None:
        return 0, 0, width, height
    cw, ch = spec.crop
    if width < cw or height < ch:
        raise InvalidInputError(f"resized image ({width}x{height}) is smaller than the crop ({cw}x{ch})")
    x1, y1 = (width - cw) // 2, (height - ch) // 2
    return x1, y1, x1 + cw, y1 + ch


def preprocess_one(spec: PreprocessSpec, rgb: np.ndarray) -> np.ndarray:
    """One RGB uint8 HWC image to the model's float32 layout (CHW when the spec says so)."""
    h, w = rgb.shape[:2]
    rw, rh = resized_size(spec, w, h)
    img = resize(spec, rgb, (rw, rh))
    x1, y1, x2, y2 = crop_box(spec, rw, rh)
    img = img[y1:y2, x1:x2]
    alpha = [np.float32(spec.scale / s) for s in spec.std]
    beta = [np.float32(-m / s) for m, s in zip(spec.mean, spec.std)]
    planes = [img[:, :, c].astype(np.float32) * alpha[c] + beta[c] for c in range(3)]
    out = np.stack(planes, axis=2)
    return out.transpose(2, 0, 1) if spec.channels_first else out


def preprocess_batch(spec: PreprocessSpec, images: list[np.ndarray]) -> np.ndarray:
    """A list of RGB uint8 HWC images to one contiguous float32 batch."""
    return np.ascontiguousarray(np.stack([preprocess_one(spec, im) for im in images]), dtype=np.float32)
