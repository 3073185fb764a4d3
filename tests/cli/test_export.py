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



# ------------------------------------------------------------------------------------------- --format triton


def test_export_triton_refuses_calibrate_and_names_why(toy_dir, tmp_path, capsys, calibration_dir):
    """--calibrate was once accepted and silently dropped by --format triton: now it is refused with the reason."""
    code = main(["export", "--format", "triton", "--model", "ToyNet", "--model-dir", str(toy_dir), "--calibrate",
                 str(calibration_dir), "--output", str(tmp_path / "repo"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    assert "--calibrate with --format triton: the Triton export does not write int8 models" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()


def test_export_triton_gpu_flags_need_a_gpu_device_and_an_arch(toy_dir, tmp_path, capsys):
    base = ["export", "--format", "triton", "--model", "ToyNet", "--model-dir", str(toy_dir),
            "--output", str(tmp_path / "repo"), "--cache-dir", str(tmp_path / "cache")]
    assert main([*base, "--tensorrt-version", "10.13"]) == 2
    assert "--tensorrt-version needs --gpu-arch" in capsys.readouterr().err
    assert main([*base, "--gpu-arch", "8.9"]) == 2
    assert "--gpu-arch writes a GPU repository: give --device gpu" in capsys.readouterr().err


@pytest.mark.slow
def test_export_triton_gpu_repository_without_a_gpu(toy_dir, tmp_path, capsys):
    """--device gpu on this GPU-less machine: with --gpu-arch the repository is written and the output says that
    the engines are built on first load and that it is unverified."""
    assert main(["export", "--format", "triton", "--model", "ToyNet", "--model-dir", str(toy_dir), "--device", "gpu",
                 "--gpu-arch", "9.0", "--tensorrt-version", "10.13", "--gpu-precision", "fp16", "--threads", "2",
                 "--output", str(tmp_path / "repo"), "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "KIND_GPU" in out and "first load" in out and "unverified" in out
    assert "onnxruntime" in out and "NVIDIA's Triton container" in out


@pytest.mark.slow
def test_export_triton_honours_gate_data(toy_dir, tmp_path, capsys, calibration_dir):
    """--gate-data reaches the selection whose decision the repository follows (it decides whether OpenVINO bf16
    may be exported): the manifest's selection record says what the gate judged."""
    import json

    assert main(["export", "--format", "triton", "--model", "ToyNet", "--model-dir", str(toy_dir), "--threads", "2",
                 "--gate-data", str(calibration_dir), "--output", str(tmp_path / "repo"),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert f"the accuracy gate judged gate_data {calibration_dir}" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "repo" / "hpi_manifest.json").read_text(encoding="utf-8"))
    assert f"gate_data {calibration_dir}" in manifest["selection"]["judged_on"]


def test_export_triton_gpu_without_a_gpu_says_how_to_state_one(toy_dir, tmp_path, capsys):
    from hpi.gpu import cuda_device_count

    if cuda_device_count():
        pytest.skip("a CUDA device is visible: the selection would run on it")
    assert main(["export", "--format", "triton", "--model", "ToyNet", "--model-dir", str(toy_dir), "--device", "gpu",
                 "--output", str(tmp_path / "repo"), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "state it" in (err := capsys.readouterr().err) and "--gpu-arch 8.9" in err
