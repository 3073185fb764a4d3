"""hpi/pipelines/config.py: both PaddleX layouts, the shipped defaults, errors that name the key, saving."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import hpi
from hpi.errors import InvalidConfigError
from hpi.pipelines import PIPELINES, create_pipeline
from hpi.pipelines.config import (
    PARSERS,
    ImageClassificationConfig,
    ModelConfig,
    ShiTuConfig,
    load_config,
    parse_config,
    save_pipeline_config,
)


def test_every_registered_pipeline_has_a_config_parser() -> None:
    assert list(PARSERS) == list(PIPELINES)


def test_default_config_is_the_seeds_shape() -> None:
    cfg = load_config("image_classification")
    assert cfg == ImageClassificationConfig(model=ModelConfig("PP-LCNet_x1_0", topk=5))
    raw = yaml.safe_load((Path(hpi.__file__).parent / "data" / "pipelines" / "image_classification.yaml").read_text())
    assert set(raw["Pipeline"]) == {"model", "model_dir", "device", "batch_size", "topk"}


def test_both_paddlex_layouts_parse() -> None:
    old = parse_config({"Pipeline": {"model": "PP-LCNet_x1_0", "device": "gpu", "batch_size": 1}})
    new = parse_config({"SubModules": {"ImageClassification": {
        "module_name": "image_classification", "model_name": "PP-LCNet_x0_5", "model_dir": None, "batch_size": 4,
        "topk": 5}}})
    assert old.model.model_name == "PP-LCNet_x1_0" and old.device == "gpu"
    assert new.model == ModelConfig("PP-LCNet_x0_5", batch_size=4, topk=5, module_name="image_classification")


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"Pipeline": {"model": "M", "batch_sise": 2}}, "Pipeline.batch_sise"),
        ({"Pipeline": {"model": "M", "batch_size": "four"}}, "Pipeline.batch_size"),
        ({"Pipeline": {"model": "M", "topk": 0}}, "Pipeline.topk"),
        ({"Pipeline": {"model_dir": "/x"}}, "Pipeline.model"),
        ({"Pipeline": {"model": "M", "use_hpip": "yes"}}, "Pipeline.use_hpip"),
        ({"Pipeline": {"model": "M"}, "extra": 1}, "extra"),
        ({"SubModules": {"Classifier": {"model_name": "M"}}, "pipeline_name": "image_classification"},
         "SubModules.Classifier"),
        ({"pipeline_name": "OCR"}, "pipeline_name"),
        ({"Pipeline": {"model": "M"}, "SubModules": {}}, "Pipeline"),
        ([1, 2], "top level"),
    ],
)
def test_classification_config_errors_name_the_key(cfg, key: str) -> None:
    with pytest.raises(InvalidConfigError, match=rf"{key}: "):
        parse_config(cfg)


def test_unknown_pipeline_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="known: image_classification, PP-ShiTuV2"):
        create_pipeline("object_detection")
    with pytest.raises(InvalidConfigError, match="does not exist"):
        create_pipeline(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("Pipeline: [unclosed", encoding="utf-8")
    with pytest.raises(InvalidConfigError, match="not valid YAML"):
        create_pipeline(str(bad))
    with pytest.raises(InvalidConfigError, match=r"config: pipeline_name is 'PP-ShiTuV2'"):
        create_pipeline("image_classification", config={"pipeline_name": "PP-ShiTuV2"})


def test_saved_default_config_round_trips(tmp_path: Path) -> None:
    path = save_pipeline_config("image_classification", tmp_path / "my_path")
    assert path == tmp_path / "my_path" / "image_classification.yaml"
    assert load_config(str(path)) == load_config("image_classification")
    assert save_pipeline_config("PP-ShiTuV2", tmp_path / "x.yaml") == tmp_path / "x.yaml"


PADDLEX_YAML = """\
pipeline_name: PP-ShiTuV2

index: None
det_threshold: 0.5
rec_threshold: 0.5
rec_topk: 5

SubModules:
  Detection:
    module_name: text_detection
    model_name: PP-ShiTuV2_det
    model_dir: null
    batch_size: 1
  Recognition:
    module_name: text_recognition
    model_name: PP-ShiTuV2_rec
    model_dir: null
    batch_size: 1
"""


def test_shitu_default_and_paddlex_configs_parse() -> None:
    cfg = load_config("PP-ShiTuV2")
    assert cfg == ShiTuConfig(detection=ModelConfig("PP-ShiTuV2_det", module_name="mainbody_detection"),
                              recognition=ModelConfig("PP-ShiTuV2_rec", module_name="image_feature"))
    paddlex = parse_config(yaml.safe_load(PADDLEX_YAML))
    assert paddlex.index is None and paddlex.rec_topk == 5 and paddlex.detection.model_name == "PP-ShiTuV2_det"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"SubModules": {"Detection": {"model_name": "d", "modeldir": "x"}, "Recognition": {"model_name": "r"}}},
         "SubModules.Detection.modeldir"),
        ({"SubModules": {"Detection": {"model_name": "d"}}}, "SubModules.Recognition"),
        ({"det_threshold": 1.5}, "det_threshold"),
        ({"rec_topk": 0}, "rec_topk"),
        ({"rec_threshold": "high"}, "rec_threshold"),
        ({"hamming_radius": 3}, "hamming_radius"),
        ({"index_path": "x"}, "index_path"),
    ],
)
def test_shitu_config_errors_name_the_key(change: dict, key: str) -> None:
    cfg = yaml.safe_load(PADDLEX_YAML)
    cfg.update(change)
    with pytest.raises(InvalidConfigError, match=rf"{key}: "):
        parse_config(cfg)
