"""hpi/pipelines/image_classification.py through create_pipeline: loading, predicting, the CLI."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import yaml

from hpi.errors import InvalidConfigError, PredictionError, UnknownModelError
from hpi.pipelines import create_pipeline
from hpi.pipelines.image_classification import ImageClassificationPipeline
from hpi.results import ClassificationResult

SEED_KEYS = {"input_path", "page_index", "class_ids", "scores", "label_names"}


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def _pipeline_block(toy_dir: Path, **extra) -> dict:
    return {"pipeline_name": "image_classification",
            "Pipeline": {"model": "ToyNet", "model_dir": str(toy_dir), "device": "cpu", "batch_size": 2, **extra}}


@pytest.fixture(scope="module")
def classifier(toy_dir: Path, tmp_path_factory, engine_cache: Path) -> ImageClassificationPipeline:
    path = _write(tmp_path_factory.mktemp("cfg") / "image_classification.yaml", _pipeline_block(toy_dir, topk=3))
    pipeline = create_pipeline(str(path), cache_dir=engine_cache)
    yield pipeline
    pipeline.close()


# ---------------------------------------------------------------------------------------------------------------
# predicting


def test_predict_gives_the_predictors_results(classifier: ImageClassificationPipeline, photos) -> None:
    results = list(classifier.predict([photos["chelsea"], photos["coffee"], photos["rocket"]]))
    assert len(results) == 3 and all(isinstance(r, ClassificationResult) for r in results)
    res = results[0]
    assert set(res.json["res"]) == SEED_KEYS and len(res["class_ids"]) == 3  # topk from the config
    assert res["label_names"][0] == f"class_{res['class_ids'][0]}"
    direct = next(classifier.predictor.predict(photos["chelsea"], topk=3))
    assert res.json == direct.json
    assert len(next(classifier.predict(photos["chelsea"], topk=1))["class_ids"]) == 1


def test_predict_input_kinds_and_failures(classifier: ImageClassificationPipeline, photos, tmp_path: Path) -> None:
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), photos["astronaut"])
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    got = []
    with pytest.raises(PredictionError, match="b.jpg"):
        for res in classifier.predict({"img": str(tmp_path)}):
            got.append(res)
    assert [Path(r["input_path"]).name for r in got] == ["a.png"]
    with pytest.raises(InvalidConfigError, match="runs on cpu"):
        classifier.predict(photos["coffee"], device="gpu:0")


def test_device_and_hpip_arguments_apply(toy_dir: Path, engine_cache: Path, photos) -> None:
    cfg = _pipeline_block(toy_dir)
    cfg["Pipeline"]["device"] = "gpu"  # create_pipeline(device=) overrides it
    with create_pipeline("image_classification", config=cfg, device="cpu", use_hpip=True,
                         hpi_config={"backend": "onnxruntime"}, cache_dir=engine_cache) as pipeline:
        assert pipeline.predictor.backend == "onnxruntime" and str(pipeline.predictor.device) == "cpu"
        with create_pipeline("image_classification", config=_pipeline_block(toy_dir),
                             cache_dir=engine_cache) as normal:
            reference = next(normal.predict(photos["coffee"]))
        assert next(pipeline.predict(photos["coffee"]))["class_ids"] == reference["class_ids"]
    cfg["Pipeline"].update(use_hpip=False, device="cpu")  # the model block's own use_hpip wins
    with create_pipeline("image_classification", config=cfg, use_hpip=True, cache_dir=engine_cache) as pipeline:
        assert pipeline.predictor.backend == "paddle" and pipeline.predictor.choice.mode == "normal"


def test_missing_model_is_built_from_the_zoo_and_logged(toy_dir: Path, tmp_path: Path, engine_cache: Path,
                                                        monkeypatch, caplog, store) -> None:
    import hpi.zoo

    built = tmp_path / "store" / "ToyNet"  # the empty private store (fixture ``store``) has no ToyNet
    monkeypatch.setattr(hpi.zoo, "build", lambda name: shutil.copytree(toy_dir, built), raising=False)
    cfg = {"Pipeline": {"model": "ToyNet", "device": "cpu"}}
    with caplog.at_level(logging.WARNING, logger="hpi.pipelines"), \
            create_pipeline("image_classification", config=cfg, cache_dir=engine_cache) as pipeline:
        assert pipeline.predictor.source.directory == built
    assert "ToyNet" in caplog.text and "SEEDED" in caplog.text

    def unbuildable(name: str) -> Path:
        raise UnknownModelError(f"no {name} in the zoo")

    monkeypatch.setattr(hpi.zoo, "build", unbuildable)
    with pytest.raises(UnknownModelError, match="no ToyNet"):
        create_pipeline("image_classification", config=cfg, cache_dir=engine_cache)

