"""hpi/cli/backends.py: ``hpi backends`` names every backend, available or with the reason it is not."""

from __future__ import annotations

from hpi.cli import main


def test_backends_command(capsys):
    assert main(["backends", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "paddle" in out and "openvino" in out and "tensorrt" in out and "unavailable" in out
