"""hpi/cli/bench.py: ``hpi bench`` prints the table in the chosen format and writes the chart."""

from __future__ import annotations

import argparse

import pytest

from hpi.cli import main
from hpi.cli.bench import DEFAULT_MODEL, int_list, model_names


def test_bench_cli_with_plot(toy_dir, tmp_path, capsys):
    plot = tmp_path / "bench.png"
    code = main(["bench", "--model", "ToyNet", "--model-dir", str(toy_dir), "--threads", "1", "--budget", "0.2",
                 "--fp32-only", "--no-stages", "--format", "csv", "--plot", str(plot),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    assert capsys.readouterr().out.startswith("model,weights")
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_model_options():
    def names(**given: str | None) -> list[str]:
        return model_names(argparse.Namespace(**{"models": None, "model": None, **given}))

    assert names() == [DEFAULT_MODEL]
    assert names(model="ResNet50") == ["ResNet50"]
    assert names(models="ResNet50, PP-LCNet_x1_0,") == ["ResNet50", "PP-LCNet_x1_0"]
    assert len(names(models="core")) == 9
    assert int_list("1,8") == [1, 8]
    for bad in ("1,x", "0", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            int_list(bad)


def test_model_dir_goes_with_one_model(toy_dir, capsys):
    assert main(["bench", "--models", "ToyNet,Other", "--model-dir", str(toy_dir)]) == 2
    assert "goes with a single model" in capsys.readouterr().err


def test_bench_cli_gate_data_is_judged_and_said(toy_dir, tmp_path, capsys, calibration_dir):
    code = main(["bench", "--model", "ToyNet", "--model-dir", str(toy_dir), "--threads", "1", "--budget", "0.2",
                 "--fp32-only", "--no-stages", "--no-roofs", "--gate-data", str(calibration_dir),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    out = capsys.readouterr().out
    assert f"the gate judged built-in photos and their mirrors (8 images) + gate_data {calibration_dir} (2 images" in out
