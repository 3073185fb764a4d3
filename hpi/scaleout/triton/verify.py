"""Checking an exported repository against its manifest, with :func:`hpi.storage.verify_files` (the one verifier)."""

from __future__ import annotations

import os
from pathlib import Path

from hpi.errors import StorageError
from hpi.storage import read_manifest, verify_files

MANIFEST_FILE = "hpi_manifest.json"


def verify_repository(path: str | os.PathLike[str]) -> list[str]:
    """Compare a repository's files with its manifest; returns the problems (empty when it is intact).

    A file the manifest lists that is missing or altered is reported by :func:`hpi.storage.verify_files` (one
    problem per such file); a file the manifest does not list is reported as ``NAME: not in the manifest``.

    Raises:
        StorageError: the manifest itself is missing or not a manifest.
    """
    root = Path(path)
    manifest = read_manifest(root, MANIFEST_FILE)
    listed = manifest["files"]
    problems = []
    for name in sorted(listed):
        try:
            verify_files(root, {name: listed[name]}, MANIFEST_FILE)
        except StorageError as exc:
            problems.append(f"{name}: {exc}")
    actual = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    problems += [f"{name}: not in the manifest" for name in actual if name != MANIFEST_FILE and name not in listed
                 and "__pycache__" not in name.split("/")]
    return problems
