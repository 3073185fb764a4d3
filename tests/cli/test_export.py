"""hpi/cli/export.py: ``hpi export`` builds the engines, prints the selection and the model's cache entries."""

from __future__ import annotations

import pytest

from hpi.cache import EngineCache
from hpi.cli import main


def test_export_cli_builds_and_selects(toy_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["export", "--model", "ToyNet", "--model-dir", str(toy_dir), "--threads", "1",
                 "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "high-performance mode for ToyNet on cpu" in out and "decision" in out and "onnx " in out
    kinds = {e.kind for e in EngineCache(cache).entries()}
    assert {"onnx", "openvino", "decision"} <= kinds
    assert main(["export", "--model", "ToyNet", "--model-dir", str(toy_dir), "--backends", "onnxruntime,tflite",
                 "--cache-dir", str(cache)]) == 2  # unknown backend: a clear error, exit 2
    assert "unknown backend 'tflite'" in capsys.readouterr().err


def test_export_cli_builds_named_backends(toy_dir, tmp_path, capsys):
    assert main(["export", "--model", "ToyNet", "--model-dir", str(toy_dir), "--backends", "onnxruntime,tensorrt",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "onnxruntime[fp32]: built" in lines
    assert any(line.startswith("tensorrt: unavailable: ") for line in lines)  # no GPU here
    assert "high-performance mode" not in "\n".join(lines)  # building only: no selection


@pytest.mark.slow
def test_export_cli_calibrates_on_a_directory_and_names_a_bad_one(toy_dir, tmp_path, capsys, calibration_dir):
    """int8 runs on every CPU with AVX2 (7-bit weights without VNNI), so this holds on any x86 CPU hpi runs on:
    faking VNNI in this process once made it fail on a real AVX2-only CPU, whose export child built for the CPU it
    really was."""
    cache = tmp_path / "cache"
    assert main(["export", "--model", "ToyNet", "--model-dir", str(toy_dir), "--threads", "1",
                 "--calibrate", str(calibration_dir), "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"int8 calibrated on {calibration_dir} (2 images" in out
    assert "openvino[int8]" in out and "onnxruntime[int8]" in out
    assert {"openvino-int8", "onnx-int8"} <= {e.kind for e in EngineCache(cache).entries()}
    missing = tmp_path / "no-such-dir"
    assert main(["export", "--model", "ToyNet", "--model-dir", str(toy_dir), "--calibrate", str(missing),
                 "--cache-dir", str(cache)]) == 2
    assert f"calibration_data: directory {missing} does not exist" in capsys.readouterr().err


def test_export_cli_judges_gate_data_and_names_a_bad_directory(toy_dir, tmp_path, capsys, calibration_dir):
    cache = tmp_path / "cache"
    assert main(["export", "--model", "ToyNet", "--model-dir", str(toy_dir), "--threads", "1", "--fp32-only",
                 "--gate-data", str(calibration_dir), "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"the accuracy gate judged built-in photos and their mirrors (8 images) + gate_data {calibration_dir}" in out
    missing = tmp_path / "no-such-dir"
    assert main(["export", "--model", "ToyNet", "--model-dir", str(toy_dir), "--gate-data", str(missing),
                 "--cache-dir", str(cache)]) == 2
    assert f"gate_data: directory {missing} does not exist" in capsys.readouterr().err

