"""Decoding encoded images to RGB uint8 HWC arrays, with errors that name the item."""

from __future__ import annotations

import cv2
import numpy as np

from hpi.errors import InvalidInputError


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode image bytes (JPEG, PNG, BMP, WebP, TIFF) to an RGB uint8 HWC array.

    EXIF orientation is applied (OpenCV's default, as PaddleX's cv2 reader does). Grayscale and 16-bit
    images are converted to 8-bit RGB; an alpha channel is dropped.

    Raises:
        InvalidInputError: the bytes are empty, truncated or not an image; the message names ``name``.
    """
    if not data:
        raise InvalidInputError(f"{name}: empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise InvalidInputError(f"{name}: not a readable image (unknown format, truncated or corrupt)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
