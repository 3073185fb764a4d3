"""hpi/calibration.py: calibration sets checked, hashed and preprocessed the model's way."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from hpi.calibration import BUILTIN_IMAGES, calibration_set, check_calibration_dir
from hpi.config import HpiConfig
from hpi.errors import InvalidConfigError
from hpi.source import ModelSource


def test_builtin_photos_by_default_and_a_directory_when_given(calibration_dir):
    builtin = calibration_set()
    assert builtin.builtin and builtin.directory == BUILTIN_IMAGES and len(builtin.files) == 4
    assert builtin.label.startswith("built-in photos (4 images, ")
    mine = calibration_set(calibration_dir)
    assert not mine.builtin and [f.name for f in mine.files] == ["chelsea.jpg", "coffee.jpg"]
    assert str(calibration_dir) in mine.label and mine.content_hash != builtin.content_hash


def test_the_hash_follows_the_content_not_the_path(calibration_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(calibration_dir, copy)
    assert calibration_set(copy).content_hash == calibration_set(calibration_dir).content_hash
    shutil.copy(BUILTIN_IMAGES / "rocket.jpg", copy / "coffee.jpg")  # same name, other image
    assert calibration_set(copy).content_hash != calibration_set(calibration_dir).content_hash


def test_a_missing_empty_or_broken_directory_is_a_clear_error(calibration_dir, tmp_path):
    with pytest.raises(InvalidConfigError, match=r"directory .*nowhere does not exist"):
        check_calibration_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(InvalidConfigError, match=r"directory .*empty holds no images"):
        check_calibration_dir(tmp_path / "empty")
    (calibration_dir / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(InvalidConfigError, match=r"cannot decode image .*broken\.jpg"):
        calibration_set(calibration_dir)


def test_hpi_config_takes_the_directory(calibration_dir):
    assert HpiConfig.from_dict({"calibration_data": str(calibration_dir)}).calibration_data == str(calibration_dir)
    with pytest.raises(InvalidConfigError, match="calibration_data: expected a directory"):
        HpiConfig.from_dict({"calibration_data": 3})


def test_tensors_are_preprocessed_the_models_way(toy_dir, calibration_dir):
    source = ModelSource.from_path(toy_dir)
    data = calibration_set(calibration_dir).tensors(source.spec.preprocess)
    assert data.shape == (2, 3, 64, 64) and data.dtype == np.float32
    assert -3 < data.min() < 0 < data.max() < 3  # ImageNet mean/std applied
