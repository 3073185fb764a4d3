"""``hpi zoo build | add | list``: argument parsing over :mod:`hpi.zoo`; the library itself never prints."""

from __future__ import annotations

import argparse
from typing import Any


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi zoo`` to the main parser's subcommands; each handler is ``args.func(args) -> int``."""
    parser = subparsers.add_parser(
        "zoo",
        help="build seeded models offline, add real weights, list the local model store",
        description=(
            "The offline model zoo: real architectures with seeded weights, saved like PaddleX inference "
            "directories in the local model store ($HPI_HOME/models). Real weights added with 'zoo add' are "
            "used in preference to seeded ones."
        ),
    )
    sub = parser.add_subparsers(dest="zoo_command", metavar="{build,add,list}", required=True)

    p = sub.add_parser("build", help="build a model with seeded weights")
    p.add_argument("name", help="PaddleX model name, e.g. PP-LCNet_x1_0")
    p.add_argument("--output", help="write the model directory here instead of the store")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("add", help="add a PaddleX inference directory with real weights to the store")
    p.add_argument("name", help="PaddleX model name; must match Global.model_name in DIR/inference.yml")
    p.add_argument("dir", help="the inference directory (inference.json/.pdmodel, .pdiparams, .yml)")
    p.set_defaults(func=_cmd_add)

    p = sub.add_parser("list", help="list buildable models and what the store holds")
    p.set_defaults(func=_cmd_list)
    return parser


def _cmd_build(args: argparse.Namespace) -> int:
    from hpi import zoo
    from hpi.zoo.store import read_provenance

    path = zoo.build(args.name, args.output, seed=args.seed, overwrite=args.overwrite)
    record = read_provenance(path)
    margin = record.get("calibration_min_margin")
    detail = f", top-1 margin {margin:.2f} on {record.get('calibration')}" if margin is not None else ""
    print(f"{args.name}: seeded weights (seed {record.get('seed')}{detail}) in {path}")
    return 0


def _cmd_add(args: argparse.Namespace) -> int:
    from hpi import zoo

    path = zoo.add(args.name, args.dir)
    print(f"{args.name}: real weights in {path} (used in preference to seeded ones)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from hpi import zoo
    from hpi.zoo.store import models_root

    entries = zoo.list_models()
    print(f"model store: {models_root()}")
    width = max((len(e.model.name) for e in entries), default=10)
    for e in entries:
        stored = ", ".join(k for k, p in (("real", e.real), ("seeded", e.seeded)) if p) or "-"
        print(f"{e.model.name:<{width}}  {e.model.family:<12}  {e.model.task:<14}  {stored}")
    return 0
