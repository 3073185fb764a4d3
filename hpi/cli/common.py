"""What several command modules share: adding a subcommand, the ``hpi_config`` their options give, progress lines."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from hpi.config import HpiConfig
from hpi.errors import InvalidConfigError


def add_command(subparsers: Any, name: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int] | None, **parser_options: Any) -> argparse.ArgumentParser:
    """Add subcommand ``name`` with the options ``add_arguments(parser)`` defines and ``run`` as its handler
    (``args.func``; None where the subcommand has subcommands of its own). ``parser_options``: help, description."""
    parser = subparsers.add_parser(name, **parser_options)
    add_arguments(parser)
    if run is not None:
        parser.set_defaults(func=run)
    return parser


# command-line option (argparse dest) -> hpi_config key, for every option that sets one
_CONFIG_OPTIONS = {"backend": "backend", "threads": "threads", "calibrate": "calibration_data",
                   "gate_data": "gate_data"}


def hpi_config_from_args(args: argparse.Namespace) -> HpiConfig:
    """The :class:`~hpi.config.HpiConfig` of the selection options a command has and was given: ``--backend``,
    ``--precision`` (the backend's precision), ``--streams`` (OpenVINO's), ``--threads`` (one number; a list of them, as ``hpi bench`` takes,
    is the caller's to iterate), ``--fp32-only``, ``--calibrate``, ``--gate-data``. The one mapping from command
    line to config, so every command means the same by the same option."""
    return HpiConfig.from_dict(hpi_config_values(args))


def hpi_config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The ``hpi_config`` keys those options set, as a plain mapping (for a server that hands it to its worker
    processes); empty when none was given. :func:`hpi_config_from_args` types it."""
    values: dict[str, Any] = {}
    for option, key in _CONFIG_OPTIONS.items():
        value = getattr(args, option, None)
        if value is not None and not isinstance(value, list):
            values[key] = value
    if getattr(args, "precision", None):
        values["backend_config"] = {"precision": args.precision}
    if getattr(args, "streams", None):
        if values.get("backend") != "openvino":
            raise InvalidConfigError(f"--streams {args.streams} is OpenVINO's: give it with --backend openvino")
        values["backend_config"] = {**values.get("backend_config", {}), "num_streams": args.streams}
    if getattr(args, "fp32_only", False):
        values["allow_reduced_precision"] = False
    return values


def progress_printer() -> Callable[[str], None]:
    """A progress callback for the library that prints each line to stderr with the seconds since it was made."""
    start = time.perf_counter()

    def show(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return show
