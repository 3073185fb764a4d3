"""``hpi backends``: which backends can run on a device, their versions and precisions, and why the others cannot."""

from __future__ import annotations

import argparse
from typing import Any

from hpi.artefacts.quantize import overflow_handling
from hpi.backends import available_backends, get_backend
from hpi.cli.common import add_command
from hpi.device import parse_device


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi backends`` to the main parser's subcommands."""
    return add_command(subparsers, "backends", add_arguments, run, help="which backends can run here, and why not")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hpi backends``."""
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    """One line per backend: available (with version and precisions) or the reason it is not."""
    device = parse_device(args.device)
    for name, reason in available_backends(device).items():
        backend = get_backend(name)
        status = "available" if reason is None else f"unavailable: {reason}"
        version = backend.version() if reason is None else "-"
        precisions = ",".join(backend.precisions(device)) if reason is None else "-"
        absent = "".join(f" ({p} not offered: {why})" for p, why in backend.absent_precisions(device).items()
                         ) if reason is None else ""
        overflow = overflow_handling(name, device) if reason is None and "int8" in backend.precisions(device) else ""
        int8 = f" (int8 overflow: {overflow})" if overflow else ""
        print(f"{name:12} {status:60} version={version} precisions={precisions}{int8}{absent}")
    return 0
