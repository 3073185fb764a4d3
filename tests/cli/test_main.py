"""hpi/cli/__init__.py: the ``hpi`` parser is made of the command modules, errors exit 2 with a message."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from hpi.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_every_command_module_registers_its_subcommand():
    modules = {p.stem for p in (ROOT / "hpi" / "cli").glob("*.py")} - {"__init__", "common"}
    assert set(COMMANDS) == modules  # a new command module must be listed, a listed one must exist
    subcommands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public API
    assert list(subcommands) == ["predict", "cache", "backends", "bench", "export", "eval", "models",
                                 "pipeline-config", "serve", "batch", "zoo", "triton", "tune"]
    for name in COMMANDS:
        assert callable(importlib.import_module(f"hpi.cli.{name}").register)


def test_errors_exit_2_with_the_reason(toy_dir, capsys):
    assert main(["predict", "--model", "ToyNet", "--model-dir", str(toy_dir), "--input", "/no/such.jpg"]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["predict", "--model", "Other", "--model-dir", str(toy_dir), "--input", "x.jpg"]) == 2
    assert "Global.model_name is 'ToyNet'" in capsys.readouterr().err
    assert main(["predict", "--model", "ToyNet", "--model-dir", str(toy_dir), "--input", "x", "--device",
                 "gpu:0", "--backend", "openvino"]) == 2
    assert "openvino does not run on gpu" in capsys.readouterr().err


def test_usage_errors_exit_2_from_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--batch-sizes", "0,8"])
    assert exc.value.code == 2 and "expected positive integers" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["hpi", "hpi.serving"])
def test_console_entry_points_run(module):
    out = subprocess.run([sys.executable, "-m", module, "--help" if module == "hpi.serving" else "--version"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("hpi " if module == "hpi" else "usage: python -m hpi.serving")
