"""``hpi cache list | verify | clear``: the engine cache's entries, checking them, or removing them.

Exit status: 0, or for ``verify`` 1 when an entry is corrupted (it is rebuilt the next time it is needed; ``hpi
cache clear`` removes it now); 2 on an error.
"""

from __future__ import annotations

import argparse
from typing import Any

from hpi.cache import EngineCache
from hpi.cli.common import add_command


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi cache`` to the main parser's subcommands."""
    return add_command(subparsers, "cache", add_arguments, run, help="list, verify or clear the engine cache")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hpi cache``."""
    parser.add_argument("action", choices=["list", "verify", "clear"],
                        help="list: entries with their state (sizes checked; 'unverified' until verify reads them); "
                             "verify: check every file's SHA-256, exit 1 if an entry is corrupted; clear: remove")
    parser.add_argument("--kind",
                        help="with clear: only entries of this kind (onnx, openvino, tensorrt, decision, ...)")
    parser.add_argument("--cache-dir", help="default: $HPI_CACHE_DIR or the platform cache directory")


def run(args: argparse.Namespace) -> int:
    """List the entries (kind, key, size, what they were built from) or say how many were removed."""
    cache = EngineCache(args.cache_dir)
    if args.action == "clear":
        n = cache.clear(args.kind)
        print(f"removed {n} entr{'y' if n == 1 else 'ies'} from {cache.root}")
        return 0
    entries = cache.entries(verify=args.action == "verify")
    print(f"engine cache: {cache.root} ({len(entries)} entries)")
    for e in entries:
        what = e.parts.get("model") or e.parts.get("onnx") or e.parts.get("ir") or ""
        print(f"{e.kind:16} {e.key}  {e.size_bytes / 1e6:8.2f} MB  {str(what)[:16]:16}  {e.state}")
    bad = sum(e.state.startswith("corrupted") for e in entries)
    if args.action == "verify":
        print(f"{len(entries) - bad} ok, {bad} corrupted" + (" (rebuilt when next needed; 'hpi cache clear' removes "
                                                               "them now)" if bad else ""))
        return 1 if bad else 0
    return 0
