"""The engine cache: every derived artefact, content-addressed, written atomically under a file lock.

An entry is a directory ``<root>/<kind>/<key>/`` written by :func:`hpi.storage.write_directory`: the artefact
files and, written last, ``manifest.json`` with the key's parts and each file's size and sha256. A directory without a valid manifest, or whose files do not
match it, is treated as absent: it is removed and rebuilt under the lock, never loaded.

Keys are hashes of what determines the artefact (model content hash, backend and its version, device signature,
precision, shape profile), never of paths, so a moved model directory still hits and a changed one never does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpi import storage
from hpi.errors import EngineCacheError, StorageError

logger = logging.getLogger(__name__)

MANIFEST = storage.MANIFEST
_FORMAT_VERSION = 1
LOCK_TIMEOUT_S = storage.LOCK_TIMEOUT_S


def default_cache_dir() -> Path:
    """``$HPI_CACHE_DIR`` if set, else the platform's user cache directory for hpi."""
    env = os.environ.get("HPI_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("hpi"))


def cache_key(parts: Mapping[str, Any]) -> str:
    """A stable hash of the key parts (order-independent, JSON-canonical)."""
    text = json.dumps({"format": _FORMAT_VERSION, **parts}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CacheEntry:
    """A valid entry as listed by :meth:`EngineCache.entries`."""

    kind: str  # "onnx", "openvino", "tensorrt", "paddle-optim", "decision", ...
    key: str
    path: Path
    parts: dict[str, Any]  # what the key was made from
    size_bytes: int
    created: float  # epoch seconds
    # "ok" (every file's checksum matched), "unverified" (sizes match; checksums not read: hpi cache verify reads
    # them), or "corrupted: <which file and how>"; an entry that is not ok is rebuilt before it is used
    state: str = "unverified"


class EngineCache:
    """Content-addressed store of built engines and other derived artefacts.

    Example:
        >>> cache = EngineCache(tmp_path)
        >>> path = cache.get_or_build("onnx", {"model": h, "opset": 17}, lambda d: (d / "model.onnx").write_bytes(b))
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def entry_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def get_or_build(self, kind: str, parts: Mapping[str, Any], build: Callable[[Path], None]) -> Path:
        """Return the entry directory for ``parts``, building it with ``build(tmp_dir)`` if absent or invalid.

        ``build`` writes its files into the empty directory it is given; :func:`hpi.storage.write_directory`
        then records their checksums and moves the directory into place atomically. Two processes asking for
        the same key build it once: the second waits on the lock and finds the first one's entry.
        """
        key = cache_key(parts)
        target = self.entry_dir(kind, key)
        if self._is_valid(target):
            return target

        def keep_existing(entry: Path) -> bool:
            if self._is_valid(entry):  # another process built it while we waited
                return True
            logger.warning("cache entry %s is incomplete or corrupted; rebuilding it", entry)
            return False

        def fill(tmp: Path) -> dict[str, Any]:
            build(tmp)
            if not any(p.is_file() for p in tmp.rglob("*")):
                raise EngineCacheError(f"building {kind} entry {key} produced no files")
            return {"format": _FORMAT_VERSION, "kind": kind, "key": key, "parts": dict(parts), "created": time.time()}

        try:
            storage.write_directory(
                target,
                fill,
                keep_existing=keep_existing,
                lock_path=self.root / ".locks" / f"{kind}-{key}.lock",
                timeout=LOCK_TIMEOUT_S,
            )
        except StorageError as exc:
            raise EngineCacheError(f"engine cache at {self.root} is not usable: {exc}") from exc
        except OSError as exc:
            raise EngineCacheError(f"engine cache at {self.root} is not usable: {exc}") from exc
        return target

    def lookup(self, kind: str, parts: Mapping[str, Any]) -> Path | None:
        """The valid entry for ``parts``, or None (never builds)."""
        target = self.entry_dir(kind, cache_key(parts))
        return target if self._is_valid(target) else None

    def _read_manifest(self, entry: Path) -> dict[str, Any] | None:
        try:
            return storage.read_manifest(entry)
        except StorageError:
            return None

    def _is_valid(self, entry: Path) -> bool:
        return storage.is_complete(entry)

    def entries(self, *, verify: bool = False) -> list[CacheEntry]:
        """Every entry with a manifest, oldest first, with its :attr:`CacheEntry.state`.

        Args:
            verify: read every file and check its SHA-256 (state ``ok`` or ``corrupted: ...``); without it only the
                sizes are compared with the manifest (state ``unverified`` or ``corrupted: ...``), a few ``stat``
                calls per entry.
        """
        out = []
        if not self.root.is_dir():
            return out
        for kind_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for entry in sorted(p for p in kind_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                manifest = self._read_manifest(entry)
                if manifest is None:
                    continue
                size = sum(int(m.get("size", 0)) for m in manifest["files"].values())
                out.append(CacheEntry(kind_dir.name, entry.name, entry, manifest.get("parts", {}), size,
                                      float(manifest.get("created", 0.0)),
                                      _verified_state(entry, manifest) if verify else _sized_state(entry, manifest)))
        return sorted(out, key=lambda e: e.created)

    def clear(self, kind: str | None = None) -> int:
        """Remove every entry (or those of one kind), including leftovers of interrupted builds.

        Returns the number of entry directories removed.
        """
        if not self.root.is_dir():
            return 0
        kinds = [self.root / kind] if kind else [p for p in self.root.iterdir() if p.is_dir() and p.name != ".locks"]
        removed = 0
        for kind_dir in kinds:
            if not kind_dir.is_dir():
                continue
            for entry in kind_dir.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        return removed


def _sized_state(entry: Path, manifest: Mapping[str, Any]) -> str:
    """``unverified`` when every file the manifest lists exists with its recorded size, else why not."""
    for name, record in manifest["files"].items():
        try:
            size = (entry / name).stat().st_size
        except OSError:
            return f"corrupted: {name} is missing"
        if not isinstance(record, dict) or size != record.get("size"):
            return f"corrupted: {name} is {size} bytes, the manifest records {record.get('size')}"
    return "unverified"


def _verified_state(entry: Path, manifest: Mapping[str, Any]) -> str:
    """``ok`` when every file matches its size and SHA-256, else which one does not (relative to the entry)."""
    try:
        storage.verify_files(entry, manifest["files"])
    except StorageError as exc:
        return "corrupted: " + str(exc).replace(f"{entry}/", "")
    return "ok"
