"""What several command modules share: the ``hpi_config`` their options give, and progress lines on stderr."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any


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
