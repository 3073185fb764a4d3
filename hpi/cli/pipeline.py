"""``hpi pipeline-config``: write a pipeline's default configuration, as ``paddlex --get_pipeline_config`` does."""

from __future__ import annotations

import argparse
from typing import Any

from hpi.cli.common import add_command
from hpi.pipelines import list_pipelines
from hpi.pipelines.config import save_pipeline_config


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi pipeline-config NAME --save-path DIR`` to the main parser's subcommands."""
    return add_command(
        subparsers,
        "pipeline-config",
        add_arguments,
        run,
        help="write a pipeline's default config (YAML) to edit and pass to --pipeline",
        description="Write NAME's default configuration to DIR/NAME.yaml; edit it and run it with "
        "'hpi predict --pipeline DIR/NAME.yaml'.",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hpi pipeline-config``."""
    names = list_pipelines()
    parser.add_argument("name", choices=names, metavar="NAME", help=f"one of: {', '.join(names)}")
    parser.add_argument("--save-path", required=True, help="directory to write NAME.yaml into (or a .yaml file path)")


def run(args: argparse.Namespace) -> int:
    """Write the config and say where."""
    path = save_pipeline_config(args.name, args.save_path)
    print(f"wrote the {args.name} pipeline config to {path}")
    return 0
