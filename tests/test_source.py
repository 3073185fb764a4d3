"""hpi/source.py: locating model files and parsing inference.yml into a typed spec."""

from __future__ import annotations

import shutil

import pytest
import yaml

from hpi.errors import ModelSourceError
from hpi.source import ModelSource, ModelSpec


def test_paddle_dir_is_parsed(toy_dir):
    src = ModelSource.from_path(toy_dir)
    assert src.format == "paddle"
    assert src.model_file.name == "inference.json"
    assert src.spec.model_name == "ToyNet"
    assert src.spec.task == "classification"
    assert src.spec.preprocess.resize_short == 72 and src.spec.preprocess.crop == (64, 64)
    assert src.spec.topk.topk == 5 and src.spec.topk.label_list[3] == "class_3"


def test_old_pdmodel_dir_is_parsed(ocr_cls_dir):
    src = ModelSource.from_path(ocr_cls_dir)
    assert src.format == "paddle" and src.model_file.suffix == ".pdmodel"
    assert src.spec.preprocess.resize_to == (192, 48)


def test_onnx_dir_and_file(orientation_dir):
    for path in (orientation_dir, orientation_dir / "inference.onnx"):
        src = ModelSource.from_path(path)
        assert src.format == "onnx" and src.params_file is None


def test_content_hash_ignores_location(toy_dir, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(toy_dir, moved)
    assert ModelSource.from_path(moved).content_hash == ModelSource.from_path(toy_dir).content_hash
    cfg = yaml.safe_load((moved / "inference.yml").read_text())
    cfg["PostProcess"]["Topk"]["topk"] = 3
    (moved / "inference.yml").write_text(yaml.safe_dump(cfg))
    assert ModelSource.from_path(moved).content_hash != ModelSource.from_path(toy_dir).content_hash


def test_model_name_must_match(toy_dir):
    with pytest.raises(ModelSourceError, match="Global.model_name is 'ToyNet' but model_name='PP-LCNet_x1_0'"):
        ModelSource.from_path(toy_dir, model_name="PP-LCNet_x1_0")


@pytest.mark.parametrize(
    ("missing", "message"),
    [("inference.yml", "inference.yml is missing"), ("inference.pdiparams", "inference.pdiparams is missing")],
)
def test_missing_files_are_named(toy_dir, tmp_path, missing, message):
    broken = tmp_path / "m"
    shutil.copytree(toy_dir, broken)
    (broken / missing).unlink()
    with pytest.raises(ModelSourceError, match=message):
        ModelSource.from_path(broken)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        ModelSource.from_path(tmp_path / "nope")


GOOD = {
    "Global": {"model_name": "M"},
    "PreProcess": {"transform_ops": [{"ResizeImage": {"resize_short": 256}}, {"CropImage": {"size": 224}},
                                     {"NormalizeImage": {}}, {"ToCHWImage": None}]},
    "PostProcess": {"Topk": {"topk": 5}},
}


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda c: c.pop("Global"), "Global.model_name"),
        (lambda c: c["PreProcess"].pop("transform_ops"), "PreProcess.transform_ops"),
        (lambda c: c["PreProcess"]["transform_ops"][0]["ResizeImage"].update(resize_short=-3),
         r"PreProcess.transform_ops\[0\].ResizeImage.resize_short"),
        (lambda c: c["PreProcess"]["transform_ops"][1]["CropImage"].update(size="big"),
         r"PreProcess.transform_ops\[1\].CropImage.size"),
        (lambda c: c["PreProcess"]["transform_ops"][2]["NormalizeImage"].update(mean=[1, 2]),
         r"PreProcess.transform_ops\[2\].NormalizeImage.mean"),
        (lambda c: c["PreProcess"]["transform_ops"].append({"Blur": {}}), r"unsupported op 'Blur'"),
        (lambda c: c["PostProcess"]["Topk"].update(topk=0), "PostProcess.Topk.topk"),
        (lambda c: c.update(PostProcess={"Foo": None}), "PostProcess: unsupported keys"),
    ],
)
def test_malformed_yml_names_the_key(tmp_path, mutate, key):
    import copy

    cfg = copy.deepcopy(GOOD)
    mutate(cfg)
    path = tmp_path / "inference.yml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ModelSourceError, match=key):
        ModelSpec.from_yaml(path)


def test_invalid_yaml_syntax(tmp_path):
    path = tmp_path / "inference.yml"
    path.write_text("Global: {model_name: [unclosed\n")
    with pytest.raises(ModelSourceError, match="not valid YAML"):
        ModelSpec.from_yaml(path)


def test_pil_resize_backend_is_honoured(toy_dir, tmp_path, photos):
    """PaddleX configs such as PP-HGNetV2's ask for ``backend: pil`` with a bicubic filter."""
    import copy

    import numpy as np

    from hpi.preprocess import reference

    cfg = copy.deepcopy(GOOD)
    cfg["PreProcess"]["transform_ops"][0]["ResizeImage"].update(interpolation="bicubic", backend="pil")
    spec = ModelSpec.from_mapping(cfg).preprocess
    assert spec.resize_backend == "pil" and spec.interpolation == "BICUBIC"
    assert type(spec).from_transform_ops(spec.to_transform_ops()) == spec
    rgb = np.ascontiguousarray(photos["chelsea"][:, :, ::-1])
    pil = reference.preprocess_one(spec, rgb)
    cv = reference.preprocess_one(type(spec)(**{**spec.__dict__, "resize_backend": "cv2"}), rgb)
    assert pil.shape == cv.shape and 0 < np.abs(pil - cv).max() < 1.0  # same image, another resampler
    cfg["PreProcess"]["transform_ops"][0]["ResizeImage"]["backend"] = "skimage"
    with pytest.raises(ModelSourceError, match="backend: expected 'cv2' or 'pil'"):
        ModelSpec.from_mapping(cfg)


def test_transform_ops_round_trip():
    spec = ModelSpec.from_mapping(GOOD).preprocess
    again = type(spec).from_transform_ops(spec.to_transform_ops())
    assert again == spec
