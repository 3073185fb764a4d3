"""The ``hpi`` command: one thin module per subcommand, each parsing arguments over a library function.

Every module in :data:`COMMANDS` has ``register(subparsers)``, which adds its subcommand with its options and sets
``func``, the handler: it calls the library, prints what comes back and returns the exit code. The library never
prints or parses arguments. An :class:`~hpi.errors.HpiError` from a handler exits 2 with its message.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from hpi.errors import HpiError

# The subcommand modules of hpi.cli, in the order ``hpi --help`` lists them.
COMMANDS = ("predict", "cache", "backends", "bench", "export", "eval", "models", "pipeline", "serve", "batch",
            "zoo", "triton", "tune")


def build_parser() -> argparse.ArgumentParser:
    """The ``hpi`` parser with every subcommand of :data:`COMMANDS`."""
    from hpi.version import __version__

    parser = argparse.ArgumentParser(prog="hpi", description="High-performance inference for PaddleX vision models")
    parser.add_argument("--version", action="version", version=f"hpi {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: info logs, -vv: debug logs")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"hpi.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hpi ARGS``; returns the exit code (2 for an :class:`~hpi.errors.HpiError`, printed to stderr)."""
    # Paddle's import-time notices are not the user's concern on the command line.
    warnings.filterwarnings("ignore", message="No ccache found")
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ logs: warnings and up
    try:
        return int(args.func(args) or 0)
    except HpiError as exc:
        print(f"hpi: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `hpi models | head`
        return 0
