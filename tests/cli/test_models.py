"""hpi/cli/models.py: ``hpi models`` prints the model cards as text, Markdown or CSV."""

from __future__ import annotations

import argparse

import pytest

from hpi.cards import core_models, load_cards, select_cards
from hpi.cli import main
from hpi.cli.models import format_cards_table, register
from hpi.errors import InvalidConfigError
from tests.test_cards import CORE


def test_tables() -> None:
    cards = load_cards()
    starnet = select_cards(cards, family="starnet")
    csv_text = format_cards_table(starnet, "csv")
    lines = csv_text.splitlines()
    assert lines[0].startswith("name,family,task") and len(lines) == 5
    assert "StarNet-S1,StarNet,classification,False,73.6," in lines[1]
    md = format_cards_table(core_models(cards), "md")
    assert md.count("\n") == 2 + 9 and "| PP-LCNet_x1_0 * |" in md
    text = format_cards_table(core_models(cards))
    assert "4.03 / 1.35" in text and "2.35 / 0.47" in text
    with pytest.raises(InvalidConfigError):
        format_cards_table(starnet, "html")  # type: ignore[arg-type]


def test_cli_lists_core_models(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="hpi")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "--core", "--format", "csv"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 10 and {line.split(",")[0] for line in out[1:]} == CORE


def test_models_command_lists_the_core_models(capsys):
    assert main(["models", "--core"]) == 0
    out = capsys.readouterr().out
    assert "PP-HGNetV2-B4" in out and "ResNet50" in out and len(out.strip().splitlines()) == 10
    assert main(["models", "--family", "VGG"]) == 2
    assert "unknown family 'VGG'" in capsys.readouterr().err
