"""hpi/cli/zoo.py: ``hpi zoo build | add | list`` over the model store."""

from __future__ import annotations

import argparse
import json

from hpi.cli.zoo import register


def test_zoo_build_add_list(store, toy_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="hpi")
    register(parser.add_subparsers())

    def run(*argv: str) -> str:
        args = parser.parse_args(list(argv))
        assert args.func(args) == 0
        return capsys.readouterr().out

    out_dir = tmp_path / "out"
    assert "seeded weights (seed 3" in run("zoo", "build", "PP-LCNet_x0_25", "--output", str(out_dir), "--seed", "3")
    assert (out_dir / "inference.json").is_file()
    assert json.loads((out_dir / "hpi_zoo.json").read_text())["seed"] == 3
    assert "real weights" in run("zoo", "add", "ToyNet", str(toy_dir))
    listing = run("zoo", "list")
    assert str(store) in listing
    assert any(line.startswith("PP-HGNetV2-B4") for line in listing.splitlines())
