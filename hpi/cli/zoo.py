"""``hpi zoo build | add | list``: the offline model zoo and the local model store."""

from __future__ import annotations

import argparse
from typing import Any

from hpi import zoo
from hpi.cli.common import add_command
from hpi.zoo.store import models_root, read_provenance


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi zoo`` and its own subcommands to the main parser's subcommands."""
    return add_command(
        subparsers,
        "zoo",
        add_arguments,
        None,
        help="build seeded models offline, add real weights, list the local model store",
        description=(
            "The offline model zoo: real architectures with seeded weights, saved like PaddleX inference "
            "directories in the local model store ($HPI_HOME/models). Real weights added with 'zoo add' are "
            "used in preference to seeded ones."
        ),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``hpi zoo``'s subcommands with their options and handlers."""
    sub = parser.add_subparsers(dest="zoo_command", metavar="{build,add,list}", required=True)

    p = sub.add_parser("build", help="build a model with seeded weights")
    p.add_argument("name", help="PaddleX model name, e.g. PP-LCNet_x1_0")
    p.add_argument("--output", help="write the model directory here instead of the store")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    p.set_defaults(func=run_build)

    p = sub.add_parser("add", help="add a PaddleX inference directory with real weights to the store")
    p.add_argument("name", help="PaddleX model name; must match Global.model_name in DIR/inference.yml")
    p.add_argument("dir", help="the inference directory (inference.json/.pdmodel, .pdiparams, .yml)")
    p.set_defaults(func=run_add)

    p = sub.add_parser("list", help="list buildable models and what the store holds")
    p.set_defaults(func=run_list)


def run_build(args: argparse.Namespace) -> int:
    """Build, then say where and with which seed (and calibration margin)."""
    path = zoo.build(args.name, args.output, seed=args.seed, overwrite=args.overwrite)
    record = read_provenance(path)
    margin = record.get("calibration_min_margin")
    detail = f", top-1 margin {margin:.2f} on {record.get('calibration')}" if margin is not None else ""
    print(f"{args.name}: seeded weights (seed {record.get('seed')}{detail}) in {path}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    """Add the directory to the store and say where it went."""
    path = zoo.add(args.name, args.dir)
    print(f"{args.name}: real weights in {path} (used in preference to seeded ones)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """One line per buildable model: family, task and which weights the store holds."""
    entries = zoo.list_models()
    print(f"model store: {models_root()}")
    width = max((len(e.model.name) for e in entries), default=10)
    for e in entries:
        stored = ", ".join(k for k, p in (("real", e.real), ("seeded", e.seeded)) if p) or "-"
        print(f"{e.model.name:<{width}}  {e.model.family:<12}  {e.model.task:<14}  {stored}")
    return 0
