"""Reading image fields within the limits: Base64, header sizes, decompression bombs, the URL allow-list."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from hpi.errors import InvalidConfigError
from hpi.serving.limits import (
    PayloadTooLargeError,
    RequestRejectedError,
    ServingLimits,
    check_pixels,
    decode_base64_image,
    decode_image_bytes,
    host_allowed,
    image_dimensions,
    is_url,
)
from tests.serving.conftest import IMAGES, b64, encoded, jpeg_bytes, png_declaring

pytestmark = pytest.mark.serving

LIMITS = ServingLimits()


def test_base64_plain_data_uri_and_wrapped_lines_decode_to_the_same_bytes():
    data = jpeg_bytes()
    text = b64(data)
    wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    assert decode_base64_image(text, LIMITS, "image") == data
    assert decode_base64_image("data:image/jpeg;base64," + text, LIMITS, "image") == data
    assert decode_base64_image(wrapped, LIMITS, "image") == data


@pytest.mark.parametrize("text", ["", "not base64 at all!", "abc", "ÿÿÿÿ"])
def test_invalid_base64_is_a_400_naming_the_field(text):
    with pytest.raises(RequestRejectedError, match="^image: ") as info:
        decode_base64_image(text, LIMITS, "image")
    assert info.value.status_code == 400


def test_oversized_base64_is_refused_before_decoding():
    limits = ServingLimits(max_image_bytes=1000)
    with pytest.raises(PayloadTooLargeError, match="more than the limit of") as info:
        decode_base64_image("A" * 4000, limits, "image")
    assert info.value.status_code == 413


def test_header_sizes_of_every_format_without_decoding():
    bgr = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff"):
        assert image_dimensions(encoded(bgr, ext), "x") == (53, 37), ext
    assert image_dimensions(jpeg_bytes("chelsea"), "x") == (451, 300)


def test_a_png_that_declares_huge_dimensions_is_refused_from_its_header():
    bomb = png_declaring(100_000, 100_000)
    assert len(bomb) < 200
    with pytest.raises(PayloadTooLargeError, match="100000 x 100000") as info:
        check_pixels(bomb, LIMITS, "image")
    assert info.value.status_code == 413


def test_a_jpeg_that_declares_huge_dimensions_is_refused_from_its_header():
    data = bytearray(jpeg_bytes("chelsea"))
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    with pytest.raises(PayloadTooLargeError, match="60000 x 60000"):
        decode_image_bytes(bytes(data), LIMITS, "image")


def test_a_thin_strip_is_refused_for_its_aspect_ratio():
    strip = encoded(np.zeros((1, 30000, 3), np.uint8))
    with pytest.raises(PayloadTooLargeError, match="elongated"):
        check_pixels(strip, LIMITS, "image")
    check_pixels(encoded(np.zeros((10, 900, 3), np.uint8)), LIMITS, "image")


@pytest.mark.parametrize("data", [b"hello world", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"\x89PNG\r\n\x1a\n",
                                  png_declaring(0, 10)])
def test_unreadable_images_are_400s(data):
    with pytest.raises(RequestRejectedError) as info:
        decode_image_bytes(data, LIMITS, "image")
    assert info.value.status_code == 400


def test_a_corrupt_png_body_is_a_400():
    data = png_declaring(64, 64)  # valid header, far too little pixel data
    with pytest.raises(RequestRejectedError, match="not a readable image") as info:
        decode_image_bytes(data, LIMITS, "image")
    assert info.value.status_code == 400


def test_decoded_pixels_are_what_paddlex_reads():
    path = IMAGES / "coffee.jpg"
    assert np.array_equal(decode_image_bytes(path.read_bytes(), LIMITS, "image"), cv2.imread(str(path)))


def test_url_detection():
    assert is_url("http://example.com/a.jpg") and is_url("https://x/y") and is_url("file:///etc/passwd")
    assert not is_url(b64(jpeg_bytes())) and not is_url("data:image/png;base64,AAAA")


@pytest.mark.parametrize(
    ("host", "port", "allow", "expected"),
    [
        ("127.0.0.1", 8000, {"127.0.0.1"}, True),
        ("127.0.0.1", 8000, {"127.0.0.1:8000"}, True),
        ("127.0.0.1", 8001, {"127.0.0.1:8000"}, False),
        ("img.example.com", 443, {"*.example.com"}, True),
        ("example.com", 443, {"*.example.com"}, False),
        ("evilexample.com", 443, {"*.example.com"}, False),
        ("example.com.evil.net", 80, {"example.com"}, False),
        ("Example.COM", 80, {"example.com"}, True),
        ("::1", 8080, {"[::1]:8080"}, True),
        ("169.254.169.254", 80, set(), False),
    ],
)
def test_allow_list_matching(host, port, allow, expected):
    limits = ServingLimits(url_allow_hosts=frozenset(allow))
    assert host_allowed(host, port, limits.url_allow_hosts) is expected


def test_limits_are_validated():
    with pytest.raises(InvalidConfigError, match="max_pixels"):
        ServingLimits(max_pixels=0)
    with pytest.raises(InvalidConfigError, match="not a host"):
        ServingLimits(url_allow_hosts=frozenset({"http://example.com/"}))
