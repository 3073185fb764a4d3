"""hpi/results.py: PaddleX's result interface, and its files written through the one atomic writer
(:func:`hpi.storage.write_file_atomic`): complete or absent, never half-written, no temp or lock file left."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpi import storage
from hpi.errors import InvalidConfigError, InvalidInputError, StorageError
from hpi.results import BaseResult, ClassificationResult, DetResult, to_jsonable


def _classification(input_path: str | None = "/data/cat.jpg", index: int = 0) -> ClassificationResult:
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[:, 40:] = (200, 30, 30)
    return ClassificationResult({"input_path": input_path, "page_index": None, "class_ids": [3, 1],
                                 "scores": [np.float32(0.75), 0.25], "label_names": ["cat", "dog"],
                                 "_image": rgb, "_index": index})


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------------- JSON


def test_json_keeps_fields_plain_and_hides_private_ones():
    res = BaseResult({"a": np.int64(3), "b": np.array([[1.5, 2.0]]), "c": (np.float32(0.5), float("nan")),
                      "d": {"x": math.inf, "_hidden": 1}, "_image": np.zeros((2, 2, 3), np.uint8)})
    assert res.json == {"res": {"a": 3, "b": [[1.5, 2.0]], "c": [0.5, None], "d": {"x": None}}}
    assert json.loads(str(res)) == res.json  # valid JSON, NaN and inf as null
    assert type(res.json["res"]["a"]) is int
    assert to_jsonable([np.bool_(True)]) == [True]


def test_save_to_json_writes_the_file_and_nothing_else(tmp_path: Path):
    res = _classification()
    path = res.save_to_json(tmp_path / "out.json")
    assert path == tmp_path / "out.json"
    assert json.loads(path.read_text(encoding="utf-8")) == res.json
    assert _names(tmp_path) == ["out.json"]  # no lock file, no temporary file


def test_save_to_json_indent_and_non_ascii(tmp_path: Path):
    res = BaseResult({"label": "猫"})
    text = res.save_to_json(tmp_path / "a.json", indent=2).read_text(encoding="utf-8")
    assert '  "res"' in text and "猫" in text
    assert "\\u732b" in res.save_to_json(tmp_path / "b.json", ensure_ascii=True).read_text(encoding="utf-8")


def test_save_to_json_replaces_an_existing_file_whole(tmp_path: Path):
    target = tmp_path / "out.json"
    target.write_text("x" * 10_000)  # longer than the new content: a rewrite in place would leave a tail
    _classification().save_to_json(target)
    assert json.loads(target.read_text(encoding="utf-8")) == _classification().json
    assert _names(tmp_path) == ["out.json"]


def test_an_unencodable_field_leaves_no_file(tmp_path: Path):
    target = tmp_path / "out.json"
    target.write_text('{"old": true}')
    with pytest.raises(TypeError):
        BaseResult({"x": object()}).save_to_json(target)
    assert target.read_text() == '{"old": true}' and _names(tmp_path) == ["out.json"]


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text('{"old": true}')

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage.os, "fsync", failing_fsync)  # the bytes were written; flushing them to disk fails
    with pytest.raises(StorageError, match=r"cannot write .*out\.json: Input/output error"):
        _classification().save_to_json(target)
    monkeypatch.undo()
    assert target.read_text() == '{"old": true}'
    assert _names(tmp_path) == ["out.json"]
    monkeypatch.setattr(storage.os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match=r"cannot write .*new\.png"):
        _classification().save_to_img(tmp_path / "new.png")
    monkeypatch.undo()
    assert _names(tmp_path) == ["out.json"]  # no half-written image, no temporary


# -------------------------------------------------------------------------------------------- where files go


@pytest.mark.parametrize(
    ("input_path", "index", "name"),
    [
        ("/data/cat.jpg", 0, "cat_res"),
        ("https://example.com/img/dog.png?size=large&v=2", 0, "dog_res"),
        (None, 3, "res_3_res"),  # an array input: named by its position
    ],
)
def test_a_directory_target_names_the_file_after_the_input(tmp_path: Path, input_path, index, name):
    res = _classification(input_path, index)
    assert res.save_to_json(tmp_path) == tmp_path / f"{name}.json"
    assert res.save_to_img(tmp_path) == tmp_path / f"{name}.jpg"  # the result type's default image format
    assert _names(tmp_path) == sorted([f"{name}.json", f"{name}.jpg"])


def test_a_path_without_suffix_is_a_directory_created_on_demand(tmp_path: Path):
    out = tmp_path / "results" / "run1"
    path = _classification().save_to_json(out)
    assert path == out / "cat_res.json" and path.is_file()
    img = _classification().save_to_img(tmp_path / "deep" / "er" / "vis.png")
    assert img.is_file()  # a file path's missing parents are created too


# ------------------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize(("suffix", "fmt"), [(".png", "PNG"), (".JPG", "JPEG"), (".jpeg", "JPEG"),
                                             (".bmp", "BMP"), (".webp", "WEBP")])
def test_save_to_img_encodes_by_the_suffix(tmp_path: Path, suffix, fmt):
    res = _classification()
    path = res.save_to_img(tmp_path / f"vis{suffix}")
    with Image.open(path) as img:
        assert img.format == fmt and img.size == (80, 60)
    assert _names(tmp_path) == [f"vis{suffix}"]


def test_save_to_img_writes_the_drawing(tmp_path: Path):
    res = _classification()
    with Image.open(res.save_to_img(tmp_path / "vis.png")) as img:
        saved = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(saved, np.asarray(res.img["res"]))
    top_left = saved[:30, :40].astype(int)  # black in the input
    assert ((top_left[..., 0] > 200) & (top_left[..., 1] > 200) & (top_left[..., 2] < 80)).any()  # yellow labels
    np.testing.assert_array_equal(saved[-5:, -5:], res["_image"][-5:, -5:])  # the rest is the input


def test_an_unknown_image_suffix_is_a_clear_config_error_and_writes_nothing(tmp_path: Path):
    with pytest.raises(InvalidConfigError, match=r"save_to_img: cannot write an image named vis\.xyz"):
        _classification().save_to_img(tmp_path / "vis.xyz")
    assert _names(tmp_path) == []


def test_a_failing_drawing_keeps_the_old_image_and_leaves_no_file(tmp_path: Path):
    target = tmp_path / "vis.png"
    target.write_bytes(b"old image")

    def unreadable():
        raise InvalidInputError("/data/gone.jpg: file not found")

    res = DetResult({"input_path": "/data/gone.jpg", "boxes": [], "_loader": unreadable})
    with pytest.raises(InvalidInputError, match="gone.jpg: file not found"):
        res.save_to_img(target)
    assert target.read_bytes() == b"old image" and _names(tmp_path) == ["vis.png"]


def test_the_source_image_is_read_once_on_demand(tmp_path: Path):
    calls = []

    def loader():
        calls.append(1)
        return np.full((10, 12, 3), 9, np.uint8)

    res = DetResult({"input_path": "x.jpg", "boxes": [
        {"cls_id": 0, "label": "text", "score": 0.9, "coordinate": [1, 1, 8, 8]}], "_loader": loader})
    assert calls == []
    res.save_to_img(tmp_path / "a.png")
    res.save_to_img(tmp_path / "b.png")
    assert calls == [1]
    assert os.path.getsize(tmp_path / "a.png") > 0
    with Image.open(io.BytesIO((tmp_path / "a.png").read_bytes())) as img:
        assert img.size == (12, 10)
