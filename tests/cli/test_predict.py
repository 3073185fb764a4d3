"""hpi/cli/predict.py: ``hpi predict`` prints PaddleX's result JSON for a model or a pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import hpi
from hpi.cli import main
from tests.conftest import render_text_line

SEED_KEYS = {"input_path", "page_index", "class_ids", "scores", "label_names"}


@pytest.mark.parametrize("backend", ["paddle", "onnxruntime", "openvino"])
def test_predict_prints_the_same_top5_on_every_cpu_backend(ocr_cls_dir, tmp_path, capsys, backend):
    import cv2

    image = tmp_path / "line.png"
    cv2.imwrite(str(image), render_text_line())
    code = main(["predict", "--model", "ch_ppocr_mobile_v2.0_cls", "--model-dir", str(ocr_cls_dir),
                 "--input", str(image), "--device", "cpu", "--backend", backend, "--save-path", str(tmp_path / "out")])
    assert code == 0
    res = json.loads(capsys.readouterr().out)["res"]
    assert res["label_names"] == ["0", "180"] and res["scores"][0] > 0.99
    assert (tmp_path / "out" / "line_res.json").is_file() and (tmp_path / "out" / "line_res.jpg").is_file()


def test_predict_pipeline_prints_the_seed_output(toy_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["pipeline-config", "image_classification", "--save-path", str(tmp_path)]) == 0
    path = tmp_path / "image_classification.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["Pipeline"].update(model="ToyNet", model_dir=str(toy_dir))
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    image = Path(hpi.__file__).parent / "data" / "images" / "chelsea.jpg"
    capsys.readouterr()
    assert main(["predict", "--pipeline", str(path), "--input", str(image), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"res"} and set(printed["res"]) == SEED_KEYS
    assert printed["res"]["input_path"] == str(image) and len(printed["res"]["scores"]) == 5
    assert np.all(np.diff(printed["res"]["scores"]) <= 0)


def test_predict_needs_a_model_or_a_pipeline(capsys):
    assert main(["predict", "--input", "x.jpg"]) == 2  # a usage error, not "partial" (1)
    assert "give --model NAME" in capsys.readouterr().err
