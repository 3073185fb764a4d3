"""hpi/preprocess/decode.py: the same pixels as PaddleX's reader, and the reduced-resolution JPEG decode."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hpi.errors import InvalidInputError
from hpi.preprocess.decode import JpegHeader, decode, decode_image, jpeg_header, reduction_for

from .conftest import encode_jpeg


def paddlex_read(path: Path) -> np.ndarray:
    """What PaddleX's ReadImage(format="RGB") returns for a file path."""
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize(
    "name",
    [
        "tiny_7x5.png",
        "tiny_1x1.jpg",
        "huge_4000x3000.jpg",
        "portrait_400x600.jpg",
        "gray.png",
        "gray.jpg",
        "rgba.png",
        "rgb16.png",
        "cmyk.jpg",
        "exif_orientation2.jpg",
        "exif_orientation3.jpg",
        "exif_orientation6.jpg",
        "exif_orientation8.jpg",
    ],
)
def test_decode_equals_paddlex_reader(awkward_files: dict[str, Path], name: str) -> None:
    path = awkward_files[name]
    rgb = decode_image(path.read_bytes(), name)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    np.testing.assert_array_equal(rgb, paddlex_read(path))


def test_bgr_order_is_the_same_pixels_reversed(awkward_files: dict[str, Path]) -> None:
    data = awkward_files["portrait_400x600.jpg"].read_bytes()
    np.testing.assert_array_equal(decode_image(data, "p", channel_order="BGR")[..., ::-1], decode_image(data, "p"))


@pytest.mark.parametrize(
    ("orientation", "rotate"),
    [
        (2, lambda a: a[:, ::-1]),  # mirrored horizontally
        (3, lambda a: a[::-1, ::-1]),  # rotated 180
        (6, lambda a: np.rot90(a, k=-1)),  # rotated 90 clockwise: 451x300 stored becomes 300x451
        (8, lambda a: np.rot90(a, k=1)),  # rotated 90 counter-clockwise
    ],
)
def test_exif_orientation_is_applied(awkward_files: dict[str, Path], orientation: int, rotate) -> None:  # noqa: ANN001
    data = awkward_files[f"exif_orientation{orientation}.jpg"].read_bytes()
    stored = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    np.testing.assert_array_equal(decode_image(data, "e"), rotate(stored[..., ::-1]))


def test_grayscale_is_replicated_into_three_channels(awkward_files: dict[str, Path]) -> None:
    rgb = decode_image(awkward_files["gray.png"].read_bytes(), "gray")
    gray = np.asarray(Image.open(awkward_files["gray.png"]))
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray)


def test_alpha_is_dropped_not_composited(awkward_files: dict[str, Path]) -> None:
    rgba = np.asarray(Image.open(awkward_files["rgba.png"]))
    np.testing.assert_array_equal(decode_image(awkward_files["rgba.png"].read_bytes(), "rgba"), rgba[..., :3])


def test_16_bit_keeps_the_high_byte(awkward_files: dict[str, Path]) -> None:
    deep = cv2.imread(str(awkward_files["rgb16.png"]), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert deep.dtype == np.uint16
    np.testing.assert_array_equal(decode_image(awkward_files["rgb16.png"].read_bytes(), "deep"), deep >> 8)


def test_cmyk_jpeg_comes_back_as_colour(awkward_files: dict[str, Path], photos: dict[str, np.ndarray]) -> None:
    rgb = decode_image(awkward_files["cmyk.jpg"].read_bytes(), "cmyk")
    # JPEG loss plus CMYK round trip: close to the photo it was made from, not exact.
    assert np.abs(rgb.astype(int) - photos["chelsea"]).mean() < 3.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image", "not a readable image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "not a readable image"),
    ],
)
def test_errors_name_the_item(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=rf"^shelf/cat\.jpg: .*{message}"):
        decode_image(data, "shelf/cat.jpg")


def test_truncated_jpeg_is_an_error_or_a_partial_image_never_a_crash(photos: dict[str, np.ndarray]) -> None:
    data = encode_jpeg(photos["chelsea"])
    try:
        rgb = decode_image(data[:200], "cut.jpg")
    except InvalidInputError as exc:
        assert "cut.jpg" in str(exc)
    else:
        assert rgb.shape[2] == 3


def test_not_bytes_is_an_error_naming_the_item() -> None:
    with pytest.raises(InvalidInputError, match=r"^item 2: expected encoded image bytes, got str"):
        decode_image("cat.jpg", "item 2")  # type: ignore[arg-type]


def test_jpeg_header_matches_pil(awkward_files: dict[str, Path]) -> None:
    for name, path in awkward_files.items():
        header = jpeg_header(path.read_bytes())
        if not name.endswith(".jpg"):
            assert header is None, name
            continue
        with Image.open(path) as im:
            assert header == JpegHeader(im.width, im.height, im.getexif().get(0x0112, 1)), name


def test_jpeg_header_reads_big_endian_exif(photos: dict[str, np.ndarray]) -> None:
    data = encode_jpeg(photos["chelsea"])
    # APP1 with a big-endian ("MM") TIFF block holding one IFD0 entry: Orientation (SHORT) = 6.
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHI", 0x0112, 3, 1) + struct.pack(">HH", 6, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    header = jpeg_header(data[:2] + app1 + data[2:])
    assert header == JpegHeader(451, 300, 6) and header.upright_size == (300, 451)


@pytest.mark.parametrize(
    ("header", "min_size", "expected"),
    [
        (JpegHeader(4000, 3000, 1), 512, 4),  # 1000x750 >= 512; 1/8 would be 500x375
        (JpegHeader(4000, 3000, 1), 376, 4),
        (JpegHeader(4000, 3000, 1), 375, 8),
        (JpegHeader(1000, 1000, 1), 512, 1),  # 500 < 512
        (JpegHeader(1023, 1023, 1), 512, 2),  # ceil(1023 / 2) = 512
        (JpegHeader(4000, 3000, 1), (1000, 800), 2),  # height 750 < 800 at 1/4
        (JpegHeader(4000, 3000, 6), (800, 1000), 2),  # upright 3000x4000: at 1/4, width 750 < 800
        (JpegHeader(4000, 3000, 6), (700, 1000), 4),
    ],
)
def test_reduction_for(header: JpegHeader, min_size, expected: int) -> None:  # noqa: ANN001
    assert reduction_for(header, min_size) == expected


def test_reduced_decode_shrinks_large_jpegs_only(awkward_files: dict[str, Path]) -> None:
    huge = decode(awkward_files["huge_4000x3000.jpg"].read_bytes(), "huge", min_size=512)
    assert huge.reduction == 4 and huge.image.shape == (750, 1000, 3)
    portrait = decode(awkward_files["portrait_400x600.jpg"].read_bytes(), "p", min_size=512)
    assert portrait.reduction == 1 and portrait.image.shape == (600, 400, 3)
    png = decode(awkward_files["gray.png"].read_bytes(), "g", min_size=10)  # only JPEGs have DCT scaling
    assert png.reduction == 1 and png.image.shape == (300, 451, 3)


def test_reduced_decode_applies_exif_orientation(awkward_files: dict[str, Path]) -> None:
    data = awkward_files["exif_orientation6.jpg"].read_bytes()
    reduced = decode(data, "e", min_size=100)
    assert reduced.reduction == 2 and reduced.image.shape == (226, 150, 3)  # upright 300x451, halved, rounded up
