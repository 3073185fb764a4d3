"""Decoding encoded images to uint8 HWC arrays, as PaddleX's reader does, with errors that name the item.

PaddleX reads an image with ``cv2.imread(path, cv2.IMREAD_COLOR)`` and converts BGR to RGB
(``paddlex/inference/common/reader/image_reader.py``). ``cv2.imdecode`` with the same flag gives the same
pixels from bytes, so this module decodes with it and inherits OpenCV's conversions:

* EXIF orientation is applied: a JPEG whose EXIF ``Orientation`` tag is 2-8 comes back flipped or rotated
  upright (orientation 6, "rotate 90 CW", turns a 451x300 stored image into 300x451). ``cv2.imread`` does
  this by default for ``IMREAD_COLOR`` and PaddleX does not turn it off.
* Grayscale images come back with the gray value in all three channels.
* An alpha channel is dropped, not composited (a transparent pixel keeps its stored colour).
* 16-bit images keep their high byte (``value >> 8``).
* CMYK JPEGs are converted to colour by OpenCV's JPEG reader.

Reduced-resolution decoding (``min_size``) uses libjpeg's DCT scaling through ``cv2.IMREAD_REDUCED_COLOR_2/4/8``:
a 4000x3000 JPEG decodes at 1/4 size several times faster than at full size. It changes pixels: the reduced
image is an area average, while a full decode followed by ``INTER_LINEAR`` resizing samples (and aliases).
It is therefore never implicit; see ``FusedPreprocessor(reduced_decode=...)`` for the measured difference.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import cv2
import numpy as np

from hpi.errors import InvalidInputError

_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# Start-of-frame markers carry the image size; 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_EXIF_ORIENTATION_TAG = 0x0112


class JpegHeader(NamedTuple):
    """What the JPEG header says, read without decoding."""

    width: int  # as stored, before EXIF orientation
    height: int
    orientation: int  # EXIF orientation 1-8 (1 when absent or unreadable)

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) after EXIF orientation: orientations 5-8 swap the axes."""
        return (self.height, self.width) if self.orientation >= 5 else (self.width, self.height)


class Decoded(NamedTuple):
    """A decoded image and the DCT reduction it was decoded at (1 for full size)."""

    image: np.ndarray  # uint8 HWC, 3 channels
    reduction: int


def decode(
    data: bytes | bytearray | memoryview,
    name: str,
    *,
    min_size: int | tuple[int, int] | None = None,
    channel_order: Literal["RGB", "BGR"] = "RGB",
) -> Decoded:
    """Decode image bytes (JPEG, PNG, BMP, WebP, TIFF) to a 3-channel uint8 HWC array.

    Args:
        data: the encoded image.
        name: how errors name the item (a path, a URL, ``"item 3"``).
        min_size: allow a reduced-resolution JPEG decode (1/2, 1/4 or 1/8) as long as the result, after EXIF
            orientation, keeps a short side of at least ``min_size`` (an int), or a width and height of at
            least ``min_size`` (a ``(width, height)`` pair). ``None`` always decodes at full size. Formats
            other than JPEG always decode at full size.
        channel_order: ``"RGB"`` (what PaddleX's predictors see) or ``"BGR"`` (OpenCV's native order; saves a
            pass when the caller reorders channels anyway).

    Returns:
        The image and the reduction it was decoded at.

    Raises:
        InvalidInputError: the bytes are empty, truncated or not an image; the message names ``name``.

    Example:
        >>> rgb = decode(open("cat.jpg", "rb").read(), "cat.jpg").image
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"{name}: expected encoded image bytes, got {type(data).__name__}")
    if not len(data):
        raise InvalidInputError(f"{name}: empty file")
    if channel_order not in ("RGB", "BGR"):
        raise InvalidInputError(f"{name}: channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    reduction = 1
    if min_size is not None:
        header = jpeg_header(data)
        if header is not None:
            reduction = reduction_for(header, min_size)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, _REDUCED_FLAGS[reduction] if reduction > 1 else cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise InvalidInputError(f"{name}: not a readable image ({exc.err or 'OpenCV decode error'})") from exc
    if img is None or img.size == 0:
        raise InvalidInputError(f"{name}: not a readable image (unknown format, truncated or corrupt)")
    if channel_order == "RGB":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return Decoded(img, reduction)


def decode_image(
    data: bytes | bytearray | memoryview,
    name: str,
    *,
    min_size: int | tuple[int, int] | None = None,
    channel_order: Literal["RGB", "BGR"] = "RGB",
) -> np.ndarray:
    """Decode image bytes to an RGB (or BGR) uint8 HWC array; :func:`decode` without the reduction record.

    With the defaults the pixels equal PaddleX's ``cv2.imread(path, cv2.IMREAD_COLOR)`` followed by BGR to RGB,
    EXIF orientation applied (see the module docstring for grayscale, alpha, 16-bit and CMYK).

    Raises:
        InvalidInputError: the bytes are empty, truncated or not an image; the message names ``name``.
    """
    return decode(data, name, min_size=min_size, channel_order=channel_order).image


def reduction_for(header: JpegHeader, min_size: int | tuple[int, int]) -> int:
    """The largest DCT reduction (1, 2, 4 or 8) whose decoded image still meets ``min_size``.

    libjpeg rounds a reduced dimension up (``ceil(width / factor)``), and so does this.
    """
    up_w, up_h = header.upright_size
    best = 1
    for factor in (2, 4, 8):
        w, h = math.ceil(up_w / factor), math.ceil(up_h / factor)
        fits = min(w, h) >= min_size if isinstance(min_size, int) else (w >= min_size[0] and h >= min_size[1])
        if not fits:
            break
        best = factor
    return best


def jpeg_header(data: bytes | bytearray | memoryview) -> JpegHeader | None:
    """Size and EXIF orientation from a JPEG's markers, or None when ``data`` is not a JPEG this can read.

    Reads only the segments before the first start-of-frame marker, so it costs microseconds.
    """
    mv = memoryview(data)
    n = len(mv)
    if n < 4 or mv[0] != 0xFF or mv[1] != 0xD8:
        return None
    orientation = 1
    i = 2
    while i + 4 <= n:
        if mv[i] != 0xFF:
            return None
        marker = mv[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = (mv[i + 2] << 8) | mv[i + 3]
        if length < 2 or i + 2 + length > n:
            return None
        segment = mv[i + 4 : i + 2 + length]
        if marker in _SOF_MARKERS:
            if len(segment) < 5:
                return None
            height = (segment[1] << 8) | segment[2]
            width = (segment[3] << 8) | segment[4]
            if width == 0 or height == 0:
                return None
            return JpegHeader(width, height, orientation)
        if marker == 0xE1 and bytes(segment[:6]) == b"Exif\x00\x00" and orientation == 1:
            orientation = _exif_orientation(bytes(segment[6:]))
        if marker == 0xDA:  # scan data before any frame header: not a JPEG this reads
            return None
        i += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> int:
    """The Orientation tag of IFD0 in a TIFF-structured EXIF block; 1 when absent or malformed."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order: Literal["little", "big"] = "little" if tiff[:2] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for k in range(count):
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(tiff):
            return 1
        if int.from_bytes(tiff[entry : entry + 2], order) == _EXIF_ORIENTATION_TAG:
            value = int.from_bytes(tiff[entry + 8 : entry + 10], order)
            return value if 1 <= value <= 8 else 1
    return 1
