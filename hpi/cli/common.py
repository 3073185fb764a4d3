"""What several command modules share: adding a subcommand, the ``hpi_config`` their options give, progress lines."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any


def add_command(subparsers: Any, name: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int] | None, **parser_options: Any) -> argparse.ArgumentParser:
    """Add subcommand ``name`` with the options ``add_arguments(parser)`` defines and ``run`` as its handler
    (``args.func``; None where the subcommand has subcommands of its own). ``parser_options``: help, description."""
    parser = subparsers.add_parser(name, **parser_options)
    add_arguments(parser)
    if run is not None:
        parser.set_defaults(func=run)
    return parser


def hpi_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``hpi_config`` of the ``--backend``, ``--precision`` and ``--threads`` options a command has and was
    given; empty when none was."""
    cfg: dict[str, Any] = {}
    if getattr(args, "backend", None):
        cfg["backend"] = args.backend
    if getattr(args, "precision", None):
        cfg["backend_config"] = {"precision": args.precision}
    if getattr(args, "threads", None):
        cfg["threads"] = args.threads
    return cfg


def progress_printer() -> Callable[[str], None]:
    """A progress callback for the library that prints each line to stderr with the seconds since it was made."""
    start = time.perf_counter()

    def show(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return show
