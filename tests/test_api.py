"""hpi/api.py: one ``create_model`` for every model, the model type picked by the task in ``inference.yml``; an
option that does not apply is refused before anything is built."""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest

import hpi
from hpi import api
from hpi.api import MODEL_TYPES, create_model
from hpi.errors import InvalidConfigError, ModelSourceError
from hpi.models.classification import Predictor
from hpi.models.detection import Detector
from hpi.source import Task
from tests.models.conftest import layout_det_dir  # noqa: F401 - the fixture, used below


def test_every_task_has_a_model_type():
    assert set(MODEL_TYPES) == set(typing.get_args(Task))
    assert MODEL_TYPES["classification"] is Predictor and MODEL_TYPES["embedding"] is Predictor
    assert MODEL_TYPES["detection"] is Detector


def test_a_classifier_comes_back_as_a_predictor(toy_dir: Path, engine_cache: Path, photos):
    with create_model("ToyNet", toy_dir, device="cpu", cache_dir=engine_cache, topk=2) as model:
        assert type(model) is Predictor and model.source.spec.task == "classification"
        (res,) = model.predict(photos["chelsea"])
        assert len(res["class_ids"]) == 2  # the option reached the model type


def test_a_detector_comes_back_as_a_detector(layout_det_dir: Path, engine_cache: Path):  # noqa: F811
    from tests.conftest import render_page

    with create_model("PicoDet_layout_1x_cdla", layout_det_dir, device="cpu", cache_dir=engine_cache) as model:
        assert type(model) is Detector and model.source.spec.task == "detection"
        (res,) = model.predict(render_page(0))
        assert res["boxes"] and {"cls_id", "label", "score", "coordinate"} <= set(res["boxes"][0])


@pytest.fixture
def no_build(monkeypatch):
    """Fails the test if create_model gets as far as loading (measuring, building or loading an engine)."""
    calls = []

    def load_model(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError("create_model went on to load the model")

    monkeypatch.setattr(api, "load_model", load_model)
    return calls


def test_an_option_of_another_model_type_is_refused_before_anything_is_built(layout_det_dir: Path,  # noqa: F811
                                                                             tmp_path: Path, no_build):
    with pytest.raises(InvalidConfigError, match=r"PicoDet_layout_1x_cdla is a detection model: option\(s\) "
                                                 r"\['topk'\] do not apply; its options: none"):
        create_model("PicoDet_layout_1x_cdla", layout_det_dir, device="cpu", cache_dir=tmp_path / "cache", topk=3)
    assert no_build == [] and not (tmp_path / "cache").exists()
    with pytest.raises(InvalidConfigError, match=r"option\(s\) \['topk'\] do not apply"):  # the package's entry
        hpi.create_model("PicoDet_layout_1x_cdla", layout_det_dir, cache_dir=tmp_path / "cache", topk=3)
    assert no_build == []


def test_an_unknown_option_is_refused_naming_the_options_there_are(toy_dir: Path, tmp_path: Path, no_build):
    with pytest.raises(InvalidConfigError, match=r"ToyNet is a classification model: option\(s\) "
                                                 r"\['score_threshold', 'top_k'\] do not apply; its options: "
                                                 r"\['topk'\]"):
        create_model("ToyNet", toy_dir, cache_dir=tmp_path / "cache", top_k=3, score_threshold=0.5)
    assert no_build == []


def test_an_option_left_at_none_does_not_count(layout_det_dir: Path, monkeypatch):  # noqa: F811
    """``topk=None`` (a CLI flag not given) reaches no model type, so it does not make a detector refuse."""
    seen = {}

    def load_model(model_type, source, **kwargs):
        seen.update(model_type=model_type, kwargs=kwargs)
        return "loaded"

    monkeypatch.setattr(api, "load_model", load_model)
    assert create_model("PicoDet_layout_1x_cdla", layout_det_dir, device="cpu", use_hpip=True, topk=None) == "loaded"
    assert seen["model_type"] is Detector
    assert seen["kwargs"] == {"device": "cpu", "use_hpip": True, "hpi_config": None, "cache_dir": None}


def test_a_wrong_model_name_is_refused_before_anything_is_built(toy_dir: Path, no_build):
    with pytest.raises(ModelSourceError, match="ToyNet"):
        create_model("PP-LCNet_x1_0", toy_dir)
    assert no_build == []


def test_the_refusal_of_a_model_type_points_at_create_model(toy_dir: Path, engine_cache: Path, photos):
    """The message of LoadedModel.check_source names hpi.create_model: calling it as named works."""
    from hpi.loading import load_model, locate_model

    with pytest.raises(InvalidConfigError, match=r"load it with hpi\.create_model"):
        load_model(Detector, locate_model("ToyNet", toy_dir), device="cpu", cache_dir=engine_cache)
    with hpi.create_model("ToyNet", toy_dir, device="cpu", cache_dir=engine_cache) as model:
        assert np.asarray(next(iter(model.predict(photos["coffee"])))["scores"]).size == 5
