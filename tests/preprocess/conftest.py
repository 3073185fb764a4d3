"""Shared inputs for the preprocessing tests: real photos (scikit-image's) and awkward files written here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hpi.preprocess.spec import PreprocessSpec

skimage_data = pytest.importorskip("skimage.data")

# PaddleX's classification inference.yml (PP-LCNet, ResNet, ...).
PADDLEX_CLS_OPS = [
    {"ResizeImage": {"resize_short": 256}},
    {"CropImage": {"size": 224}},
    {
        "NormalizeImage": {
            "channel_num": 3,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "scale": "1.0/255.0",
            "order": "",
        }
    },
    {"ToCHWImage": None},
]


@pytest.fixture(scope="session")
def cls_spec() -> PreprocessSpec:
    return PreprocessSpec.from_transform_ops(PADDLEX_CLS_OPS)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real RGB photos of several sizes and aspects (landscape, square, portrait)."""
    coffee = skimage_data.coffee()
    return {
        "astronaut": skimage_data.astronaut(),  # 512x512
        "chelsea": skimage_data.chelsea(),  # 451x300
        "coffee_500x375": np.ascontiguousarray(coffee[12:387, 50:550]),
        "rocket": skimage_data.rocket(),  # 640x427
        "coffee_portrait": np.ascontiguousarray(coffee.transpose(1, 0, 2)),  # 400x600
        "hubble": skimage_data.hubble_deep_field(),  # 1000x872
    }


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _exif_jpeg(path: Path, rgb: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, quality=92, exif=exif.tobytes())


@pytest.fixture(scope="session")
def awkward_files(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, np.ndarray]) -> dict[str, Path]:
    """Image files that trip naive readers, written with OpenCV and PIL."""
    root = tmp_path_factory.mktemp("awkward")
    chelsea = photos["chelsea"]
    rng = np.random.default_rng(7)
    files: dict[str, Path] = {}

    def put(name: str) -> Path:
        files[name] = root / name
        return files[name]

    Image.fromarray(cv2.resize(chelsea, (7, 5), interpolation=cv2.INTER_AREA)).save(put("tiny_7x5.png"))
    Image.fromarray(chelsea[100:101, 200:201]).save(put("tiny_1x1.jpg"), quality=95)
    huge = cv2.resize(photos["astronaut"], (4000, 3000), interpolation=cv2.INTER_CUBIC)
    Image.fromarray(huge).save(put("huge_4000x3000.jpg"), quality=90)
    Image.fromarray(photos["coffee_portrait"]).save(put("portrait_400x600.jpg"), quality=92)
    Image.fromarray(chelsea[:, :, 1]).save(put("gray.png"))
    Image.fromarray(chelsea[:, :, 1]).save(put("gray.jpg"), quality=92)
    alpha = rng.integers(0, 256, chelsea.shape[:2], dtype=np.uint8)
    Image.fromarray(np.dstack([chelsea, alpha])).save(put("rgba.png"))
    deep = chelsea.astype(np.uint16) * 257 + rng.integers(0, 256, chelsea.shape, dtype=np.uint16)
    cv2.imwrite(str(put("rgb16.png")), np.ascontiguousarray(deep[..., ::-1]))
    Image.fromarray(chelsea).convert("CMYK").save(put("cmyk.jpg"), quality=95)
    for orientation in (2, 3, 6, 8):
        _exif_jpeg(put(f"exif_orientation{orientation}.jpg"), chelsea, orientation)
    return files
