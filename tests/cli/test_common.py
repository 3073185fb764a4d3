"""hpi/cli/common.py: the one mapping from command-line options to hpi_config."""

from __future__ import annotations

import argparse

import pytest

from hpi.cli import build_parser
from hpi.cli.common import hpi_config_from_args
from hpi.config import HpiConfig


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_no_option_is_the_default_config():
    assert hpi_config_from_args(parse("export", "--model", "M")) == HpiConfig()


def test_every_selection_option_reaches_the_config(tmp_path):
    args = parse("export", "--model", "M", "--threads", "3", "--fp32-only", "--calibrate", str(tmp_path),
                 "--gate-data", str(tmp_path))
    cfg = hpi_config_from_args(args)
    assert (cfg.threads, cfg.allow_reduced_precision, cfg.calibration_data, cfg.gate_data) == (
        3, False, str(tmp_path), str(tmp_path))


def test_backend_and_precision(tmp_path):
    cfg = hpi_config_from_args(parse("predict", "--model", "M", "--input", "x.jpg", "--backend", "openvino",
                                     "--precision", "int8", "--threads", "2"))
    assert (cfg.backend, dict(cfg.backend_config), cfg.threads) == ("openvino", {"precision": "int8"}, 2)


@pytest.mark.parametrize("command", [["bench"], ["export", "--model", "M"]])
def test_the_same_options_mean_the_same_in_every_command(command, tmp_path):
    """hpi bench and hpi export give one config for --fp32-only --gate-data (bench's --threads is a list it
    iterates itself, so it stays out of the config)."""
    args = parse(*command, "--fp32-only", "--gate-data", str(tmp_path))
    assert hpi_config_from_args(args) == HpiConfig(allow_reduced_precision=False, gate_data=str(tmp_path))
    assert hpi_config_from_args(parse("bench", "--threads", "1,2")).threads is None
