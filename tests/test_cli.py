"""hpi/cli.py: the commands print what the library returns, and errors exit 2 with a message."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hpi.cli import main
from tests.conftest import render_text_line


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


def test_errors_exit_2_with_the_reason(toy_dir, capsys):
    assert main(["predict", "--model", "ToyNet", "--model-dir", str(toy_dir), "--input", "/no/such.jpg"]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["predict", "--model", "Other", "--model-dir", str(toy_dir), "--input", "x.jpg"]) == 2
    assert "Global.model_name is 'ToyNet'" in capsys.readouterr().err
    assert main(["predict", "--model", "ToyNet", "--model-dir", str(toy_dir), "--input", "x", "--device",
                 "gpu:0", "--backend", "openvino"]) == 2
    assert "openvino does not run on gpu" in capsys.readouterr().err


def test_backends_and_cache_commands(toy_dir, tmp_path, capsys):
    assert main(["backends", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "paddle" in out and "openvino" in out and "tensorrt" in out and "unavailable" in out
    cache = tmp_path / "cache"
    import hpi

    hpi.create_model("ToyNet", toy_dir, device="cpu", hpi_config={"backend": "openvino"}, cache_dir=cache)
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    listing = capsys.readouterr().out
    assert "onnx" in listing and "openvino" in listing
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "removed 3 entries" in capsys.readouterr().out


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "hpi", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("hpi ")


def test_models_command_lists_the_core_models(capsys):
    assert main(["models", "--core"]) == 0
    out = capsys.readouterr().out
    assert "PP-HGNetV2-B4" in out and "ResNet50" in out and len(out.strip().splitlines()) == 10
