"""hpi/preprocess/fused.py against PaddleX's op chain (hpi/preprocess/reference.py).

Tolerances, as max abs difference of the float32 output against the reference:
* RGB arrays in: 0, bit-identical, for every interpolation, layout and image shape here.
* Encoded bytes in (full decode): 0 against ``decode_image`` + reference.
* Encoded bytes in with ``reduced_decode=True``: not bit-identical; on a 4000x3000 upscaled photo the mean abs
  difference stays under 1 uint8 level (see test_reduced_decode_is_close_on_large_photos).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from hpi.errors import InvalidConfigError, InvalidInputError
from hpi.preprocess import reference
from hpi.preprocess.decode import decode_image
from hpi.preprocess.fused import FusedPreprocessor, PreprocessedBatch
from hpi.preprocess.spec import PreprocessSpec

from .conftest import PADDLEX_CLS_OPS, encode_jpeg

_NORMALIZE = PADDLEX_CLS_OPS[2]


def _spec(*ops: object) -> PreprocessSpec:
    return PreprocessSpec.from_transform_ops(list(ops))


SPECS = {
    "paddlex_cls": _spec(*PADDLEX_CLS_OPS),
    "hwc_no_tochw": _spec({"ResizeImage": {"resize_short": 256}}, {"CropImage": {"size": 224}}, _NORMALIZE),
    "resize_to_nonsquare": _spec({"ResizeImage": {"size": [192, 160]}}, _NORMALIZE, "ToCHWImage"),
    "bicubic_rect_crop": _spec(
        {"ResizeImage": {"resize_short": 240, "interpolation": "BICUBIC"}},
        {"CropImage": {"size": [224, 200]}},
        {"NormalizeImage": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "scale": 0.00392156862745098}},
        "ToCHWImage",
    ),
    "area": _spec({"ResizeImage": {"resize_short": 160, "interpolation": "AREA"}}, {"CropImage": {"size": 128}},
                  _NORMALIZE, "ToCHWImage"),
    "nearest": _spec({"ResizeImage": {"resize_short": 256, "interpolation": "NEAREST"}},
                     {"CropImage": {"size": 224}}, _NORMALIZE, "ToCHWImage"),
    "pil_bilinear": _spec({"ResizeImage": {"resize_short": 256, "backend": "pil"}}, {"CropImage": {"size": 224}},
                          _NORMALIZE, "ToCHWImage"),
    "pil_bicubic": _spec({"ResizeImage": {"resize_short": 232, "interpolation": "BICUBIC", "backend": "pil"}},
                         {"CropImage": {"size": 224}}, _NORMALIZE, "ToCHWImage"),
    "lanczos": _spec({"ResizeImage": {"resize_short": 256, "interpolation": "LANCZOS4"}},
                     {"CropImage": {"size": 224}}, _NORMALIZE, "ToCHWImage"),
}

AWKWARD = [
    "tiny_7x5.png",
    "tiny_1x1.jpg",
    "huge_4000x3000.jpg",
    "portrait_400x600.jpg",
    "gray.png",
    "gray.jpg",
    "rgba.png",
    "rgb16.png",
    "cmyk.jpg",
    "exif_orientation3.jpg",
    "exif_orientation6.jpg",
]


@pytest.mark.parametrize("spec_name", sorted(SPECS))
def test_arrays_are_bit_identical_to_reference(photos: dict[str, np.ndarray], spec_name: str) -> None:
    spec = SPECS[spec_name]
    images = list(photos.values())
    with FusedPreprocessor(spec, threads=2) as pre:
        got = pre(images)
    want = reference.preprocess_batch(spec, images)
    assert got.dtype == np.float32 and got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("spec_name", ["paddlex_cls", "hwc_no_tochw", "resize_to_nonsquare", "pil_bilinear"])
def test_encoded_is_bit_identical_to_decode_plus_reference(
    awkward_files: dict[str, Path], spec_name: str
) -> None:
    spec = SPECS[spec_name]
    data = [awkward_files[name].read_bytes() for name in AWKWARD]
    with FusedPreprocessor(spec, threads=2) as pre:
        result = pre.preprocess_encoded(data, names=AWKWARD)
    assert result.ok and result.indices == tuple(range(len(AWKWARD)))
    assert result.reductions == (1,) * len(AWKWARD)  # off by default, even for the 4000x3000 JPEG
    want = reference.preprocess_batch(spec, [decode_image(d, n) for d, n in zip(data, AWKWARD)])
    np.testing.assert_array_equal(result.batch, want)


@pytest.mark.parametrize("interpolation", ["NEAREST", "LINEAR", "BICUBIC", "AREA", "LANCZOS4"])
def test_random_geometries_are_bit_identical(interpolation: str) -> None:
    """Up- and downscales, exact factors of 2 and 3, odd sizes: the partial resize must never show."""
    rng = np.random.default_rng(11)
    for trial in range(40):
        short = int(rng.choice([32, 64, 160, 256]))
        crop = int(rng.integers(1, short + 1))
        if trial % 4 == 0:  # an exact downscale factor
            w, h = short * int(rng.choice([2, 3])), int(rng.integers(short, 4 * short))
        else:
            w, h = int(rng.integers(1, 700)), int(rng.integers(1, 700))
        spec = _spec({"ResizeImage": {"resize_short": short, "interpolation": interpolation}},
                     {"CropImage": {"size": crop}}, _NORMALIZE, "ToCHWImage")
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        with FusedPreprocessor(spec, threads=1) as pre:
            got = pre([image])
        np.testing.assert_array_equal(got, reference.preprocess_batch(spec, [image]), err_msg=f"{w}x{h} {spec}")


def test_one_thread_and_two_threads_agree(photos: dict[str, np.ndarray], cls_spec: PreprocessSpec) -> None:
    images = list(photos.values()) * 3
    with FusedPreprocessor(cls_spec, threads=1) as one, FusedPreprocessor(cls_spec, threads=2) as two:
        np.testing.assert_array_equal(one(images), two(images))


def test_writes_into_the_given_buffer(photos: dict[str, np.ndarray], cls_spec: PreprocessSpec) -> None:
    images = [photos["chelsea"], photos["rocket"]]
    buf = np.full((4, 3, 224, 224), np.nan, np.float32)
    with FusedPreprocessor(cls_spec, threads=2) as pre:
        got = pre(images, out=buf)
        assert got.shape == (2, 3, 224, 224) and np.shares_memory(got, buf)
        np.testing.assert_array_equal(buf[:2], reference.preprocess_batch(cls_spec, images))
        assert np.isnan(buf[2:]).all()  # rows past the batch are left alone
        again = pre([photos["astronaut"]], out=buf)
        np.testing.assert_array_equal(again, reference.preprocess_batch(cls_spec, [photos["astronaut"]]))


def test_without_out_each_call_returns_its_own_array(photos: dict[str, np.ndarray], cls_spec: PreprocessSpec) -> None:
    with FusedPreprocessor(cls_spec, threads=1) as pre:
        first = pre([photos["chelsea"]])[0]
        second = pre([photos["rocket"]])[0]
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, reference.preprocess_one(cls_spec, photos["chelsea"]))


@pytest.mark.parametrize(
    "out",
    [
        np.empty((1, 3, 224, 224), np.float32),  # too few rows
        np.empty((2, 3, 224, 224), np.float64),
        np.empty((2, 224, 224, 3), np.float32),
        np.empty((2, 3, 224, 448), np.float32)[:, :, :, ::2],
    ],
)
def test_a_wrong_out_buffer_is_refused(photos: dict[str, np.ndarray], cls_spec: PreprocessSpec, out: np.ndarray
                                       ) -> None:
    with FusedPreprocessor(cls_spec, threads=1) as pre, pytest.raises(InvalidInputError, match=r"^out: expected"):
        pre([photos["chelsea"], photos["rocket"]], out=out)


def test_bad_items_do_not_lose_the_batch(photos: dict[str, np.ndarray], cls_spec: PreprocessSpec) -> None:
    good = [encode_jpeg(photos["chelsea"]), encode_jpeg(photos["rocket"]), encode_jpeg(photos["astronaut"])]
    items = [good[0], b"not an image", good[1], np.zeros((5, 5), np.uint8), b"", photos["astronaut"]]
    names = ["a.jpg", "b.jpg", "c.jpg", "d.npy", "e.jpg", "f.npy"]
    with FusedPreprocessor(cls_spec, threads=2) as pre:
        result = pre.process(items, names)
    assert isinstance(result, PreprocessedBatch) and not result.ok
    assert result.indices == (0, 2, 5)
    assert [(e.index, e.name) for e in result.errors] == [(1, "b.jpg"), (3, "d.npy"), (4, "e.jpg")]
    assert str(result.errors[0].error).startswith("b.jpg: not a readable image")
    assert "d.npy: expected an RGB uint8 array of shape (H, W, 3), got uint8 array of shape (5, 5)" in str(
        result.errors[1].error
    )
    assert str(result.errors[2].error) == "e.jpg: empty file"
    want = reference.preprocess_batch(
        cls_spec, [decode_image(good[0], "a"), decode_image(good[1], "c"), photos["astronaut"]]
    )
    np.testing.assert_array_equal(result.batch, want)


def test_all_items_bad_gives_an_empty_batch(cls_spec: PreprocessSpec) -> None:
    with FusedPreprocessor(cls_spec, threads=2) as pre:
        result = pre.preprocess_encoded([b"x", b"y"])
    assert result.batch.shape == (0, 3, 224, 224) and result.indices == ()
    assert [e.name for e in result.errors] == ["item 0", "item 1"]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 3), np.float32), r"got float32 array of shape \(10, 10, 3\)"),
        (np.zeros((10, 10, 4), np.uint8), r"shape \(10, 10, 4\)"),
        (np.zeros((0, 10, 3), np.uint8), r"shape \(0, 10, 3\)"),
        (b"\xff\xd8 bytes", r"expected an RGB uint8 array of shape \(H, W, 3\), got bytes"),
    ],
)
def test_call_raises_naming_the_item(photos: dict[str, np.ndarray], cls_spec: PreprocessSpec, image: object,
                                     message: str) -> None:
    with FusedPreprocessor(cls_spec, threads=2) as pre, pytest.raises(InvalidInputError, match=rf"^item 1: .*{message}"):
        pre([photos["chelsea"], image])  # type: ignore[list-item]


def test_image_smaller_than_the_crop_is_a_per_item_error(photos: dict[str, np.ndarray]) -> None:
    spec = _spec({"ResizeImage": {"size": [200, 200]}}, {"CropImage": {"size": 224}}, _NORMALIZE, "ToCHWImage")
    with FusedPreprocessor(spec, threads=1) as pre:
        result = pre.process([photos["chelsea"]], ["small.jpg"])
    assert str(result.errors[0].error).startswith("small.jpg (451x300): resized image (200x200) is smaller")


def test_extreme_aspect_resizes_through_a_temporary(cls_spec: PreprocessSpec) -> None:
    strip = np.random.default_rng(3).integers(0, 256, (2, 300, 3), dtype=np.uint8)  # resized to 38400x256
    with FusedPreprocessor(cls_spec, threads=1) as pre:
        np.testing.assert_array_equal(pre([strip]), reference.preprocess_batch(cls_spec, [strip]))


def test_variable_size_spec_batches_equal_sizes_and_reports_the_rest(photos: dict[str, np.ndarray]) -> None:
    spec = _spec({"ResizeImage": {"resize_short": 128}}, _NORMALIZE, "ToCHWImage")  # no crop: aspect kept
    same = [photos["chelsea"], photos["chelsea"][::-1].copy()]
    with FusedPreprocessor(spec, threads=2) as pre:
        assert pre.row_shape is None
        np.testing.assert_array_equal(pre(same), reference.preprocess_batch(spec, same))
        result = pre.process([photos["chelsea"], photos["astronaut"]])
    assert result.indices == (0,)
    assert "differs from the batch's 192x128" in str(result.errors[0].error)


def test_spec_without_resize_is_refused() -> None:
    spec = PreprocessSpec(None, None, "LINEAR", None, (0.0,) * 3, (1.0,) * 3, 1.0, True)
    with pytest.raises(InvalidConfigError, match="no resize step"):
        FusedPreprocessor(spec)


def test_threads_must_be_positive(cls_spec: PreprocessSpec) -> None:
    with pytest.raises(InvalidInputError, match="threads: expected a positive integer"):
        FusedPreprocessor(cls_spec, threads=0)


def test_concurrent_callers_with_their_own_buffers(photos: dict[str, np.ndarray], cls_spec: PreprocessSpec) -> None:
    images = list(photos.values())
    want = reference.preprocess_batch(cls_spec, images)
    errors: list[BaseException] = []
    with FusedPreprocessor(cls_spec, threads=2) as pre:

        def worker() -> None:
            try:
                for _ in range(3):
                    np.testing.assert_array_equal(pre(images), want)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def _levels(diff: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Float32 output differences back in uint8 levels (per channel alpha = scale / std)."""
    alpha = np.array([spec.scale / s for s in spec.std], np.float32).reshape(3, 1, 1)
    return np.abs(diff) / alpha


def test_reduced_decode_is_close_on_large_photos(awkward_files: dict[str, Path], cls_spec: PreprocessSpec) -> None:
    data = awkward_files["huge_4000x3000.jpg"].read_bytes()
    small = awkward_files["portrait_400x600.jpg"].read_bytes()
    with FusedPreprocessor(cls_spec, threads=2, reduced_decode=True) as pre:
        result = pre.preprocess_encoded([data, small])
    assert result.reductions == (4, 1)  # 1000x750 keeps a short side >= 2 x 256; 400x600 is left alone
    want = reference.preprocess_batch(cls_spec, [decode_image(data, "h"), decode_image(small, "p")])
    levels = _levels(result.batch[0] - want[0], cls_spec)
    assert levels.mean() < 1.0, levels.mean()
    assert np.percentile(levels, 99) < 8.0
    np.testing.assert_array_equal(result.batch[1], want[1])
