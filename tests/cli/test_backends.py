"""hpi/cli/backends.py: ``hpi backends`` names every backend, available or with the reason it is not."""

from __future__ import annotations

from hpi.cli import main


def test_backends_command(capsys):
    assert main(["backends", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "paddle" in out and "openvino" in out and "tensorrt" in out and "unavailable" in out


def test_backends_list_int8_on_an_avx2_cpu_with_its_overflow_handling(capsys, cpu_without_vnni):
    """Issue 21: on an AVX2-only CPU int8 is offered on OpenVINO and ONNX Runtime, each saying how it avoids 16-bit
    saturation, and no reason says int8 would be emulated."""
    assert main(["backends", "--device", "cpu"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "precisions=fp32,int8 (int8 overflow: 7-bit weights (NNCF OverflowFix.ENABLE)" in lines["openvino"]
    assert "precisions=fp32,int8 (int8 overflow: 7-bit weights (reduce_range=True)" in lines["onnxruntime"]
    assert "PaddleSlim" in lines["paddle"] and "emulated" not in "".join(lines.values())
