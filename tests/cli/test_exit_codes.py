"""docs/reference/exit-codes.md: every command's row, each code tested (here or by the test the page names)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from hpi.aot import EngineBuild
from hpi.cli import build_parser, main
from hpi.cli.export import export_exit_code

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "reference" / "exit-codes.md"


def table_rows() -> list[list[str]]:
    rows = [line.strip().strip("|").split("|") for line in PAGE.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `hpi ")]
    return [[cell.strip() for cell in row] for row in rows]


def test_the_page_has_a_row_for_every_command_and_every_named_test_exists():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    documented = {m for row in table_rows() for m in re.findall(r"`hpi ([a-z-]+)", row[0])}
    assert documented == set(commands)
    for row in table_rows():
        named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row[-1])
        assert named, f"no test named for {row[0]}"
        for path, name in named:
            assert re.search(rf"^def {name}\(", (ROOT / path).read_text(encoding="utf-8"), re.M), f"{path}::{name}"


@pytest.mark.parametrize("argv", [
    ["predict", "--no-such-option"], ["cache", "compact"], ["backends", "--no-such-option"], ["bench", "--nope"],
    ["export"], ["eval"], ["models", "--task", "nonsense"], ["pipeline-config", "no-such-pipeline"], ["serve"],
    ["batch"], ["zoo", "--nope"], ["tune"], ["triton", "verify"],
])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_predict_without_a_readable_model_exits_2(tmp_path, capsys):
    assert main(["predict", "--model", "ToyNet", "--model-dir", str(tmp_path / "absent"), "--input", "x.jpg",
                 "--device", "cpu"]) == 2
    assert "hpi: error:" in capsys.readouterr().err


def test_export_exits_1_when_some_builds_failed():
    built, failed = EngineBuild("onnxruntime[fp32]", "built"), EngineBuild("openvino[fp32]", "failed", "no space")
    unavailable = EngineBuild("tensorrt", "unavailable", "no GPU")
    assert export_exit_code([built, unavailable]) == 0
    assert export_exit_code([built, failed]) == 1
    assert export_exit_code([failed, unavailable]) == 2
    assert export_exit_code([]) == 0  # the selection ran instead: its own failures raise (exit 2)


def test_export_exits_2_when_no_engine_could_be_built(toy_dir, tmp_path, capsys):
    """The probe's case: every build fails because the cache cannot be written (here a file where a directory must
    go, which stops root as well as other users)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    assert main(["export", "--model", "ToyNet", "--model-dir", str(toy_dir), "--backends", "onnxruntime,openvino",
                 "--cache-dir", str(blocker / "cache")]) == 2
    out = capsys.readouterr().out
    assert "onnxruntime[fp32]: failed" in out and "openvino[fp32]: failed" in out


def test_serve_configuration_errors_exit_2(capsys):
    assert main(["serve", "--pipeline", "PP-ShiTuV2", "--workers", "2"]) == 2
    assert "served by one process" in capsys.readouterr().err
    assert main(["serve", "--pipeline", "image_classification", "--address", "127.0.0.1:6379"]) == 2
    assert "--address is for --engine ray" in capsys.readouterr().err
