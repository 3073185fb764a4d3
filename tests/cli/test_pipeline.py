"""hpi/cli/pipeline.py: ``hpi pipeline-config`` writes a pipeline's default config."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from hpi.cli.pipeline import register


def test_pipeline_config_cli(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="hpi")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["pipeline-config", "PP-ShiTuV2", "--save-path", str(tmp_path)])
    assert args.func(args) == 0
    assert (tmp_path / "PP-ShiTuV2.yaml").is_file() and "PP-ShiTuV2.yaml" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["pipeline-config", "nope", "--save-path", str(tmp_path)])
