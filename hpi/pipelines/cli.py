"""``hpi pipeline-config``: write a pipeline's default configuration, as ``paddlex --get_pipeline_config`` does.

Registered by :mod:`hpi.cli` through ``register_cli(subparsers)``.
"""

from __future__ import annotations

import argparse


def _cmd_pipeline_config(args: argparse.Namespace) -> int:
    from hpi.pipelines.config import save_pipeline_config

    path = save_pipeline_config(args.name, args.save_path)
    print(f"wrote the {args.name} pipeline config to {path}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pipeline-config NAME --save-path DIR`` to the ``hpi`` command."""
    from hpi.pipelines import list_pipelines

    p = subparsers.add_parser(
        "pipeline-config",
        help="write a pipeline's default config (YAML) to edit and pass to --pipeline",
        description="Write NAME's default configuration to DIR/NAME.yaml; edit it and run it with "
        "'hpi predict --pipeline DIR/NAME.yaml'.",
    )
    p.add_argument("name", choices=list_pipelines(), metavar="NAME", help=f"one of: {', '.join(list_pipelines())}")
    p.add_argument("--save-path", required=True, help="directory to write NAME.yaml into (or a .yaml file path)")
    p.set_defaults(func=_cmd_pipeline_config)
