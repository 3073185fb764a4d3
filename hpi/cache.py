"""The engine cache: every derived artefact, content-addressed, written atomically under a file lock.

An entry is a directory ``<root>/<kind>/<key>/`` holding the artefact files and, written last, ``manifest.json``
with the key's parts and each file's size and sha256. A directory without a valid manifest, or whose files do not
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
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from hpi.errors import EngineCacheError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_FORMAT_VERSION = 1
LOCK_TIMEOUT_S = 3600.0  # TensorRT builds of large models can take many minutes


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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """A valid entry as listed by :meth:`EngineCache.entries`."""

    kind: str  # "onnx", "openvino", "tensorrt", "paddle-optim", "decision", ...
    key: str
    path: Path
    parts: dict[str, Any]  # what the key was made from
    size_bytes: int
    created: float  # epoch seconds


class EngineCache:
    """Content-addressed store of built engines and other derived artefacts.

    Example:
        >>> cache = EngineCache(tmp_path)
        >>> path = cache.get_or_build("onnx", {"model": h, "opset": 17}, lambda d: (d / "model.onnx").write_bytes(b))
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self._verified: set[Path] = set()  # entries already checked in this process

    def entry_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def get_or_build(self, kind: str, parts: Mapping[str, Any], build: Callable[[Path], None]) -> Path:
        """Return the entry directory for ``parts``, building it with ``build(tmp_dir)`` if absent or invalid.

        ``build`` writes its files into the empty directory it is given; the cache then records their checksums
        and moves the directory into place atomically. Two processes asking for the same key build it once: the
        second waits on the lock and finds the first one's entry.
        """
        key = cache_key(parts)
        target = self.entry_dir(kind, key)
        if self._is_valid(target):
            return target
        lock_dir = self.root / ".locks"
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(lock_dir / f"{kind}-{key}.lock"), timeout=LOCK_TIMEOUT_S)
            with lock:
                if self._is_valid(target):  # another process built it while we waited
                    return target
                if target.exists():
                    logger.warning("cache entry %s is incomplete or corrupted; rebuilding it", target)
                    shutil.rmtree(target, ignore_errors=True)
                self._build_into(kind, key, target, parts, build)
        except Timeout as exc:
            raise EngineCacheError(f"timed out after {LOCK_TIMEOUT_S:.0f} s waiting for the lock on {target}") from exc
        except OSError as exc:
            raise EngineCacheError(f"engine cache at {self.root} is not usable: {exc}") from exc
        return target

    def lookup(self, kind: str, parts: Mapping[str, Any]) -> Path | None:
        """The valid entry for ``parts``, or None (never builds)."""
        target = self.entry_dir(kind, cache_key(parts))
        return target if self._is_valid(target) else None

    def _build_into(
        self, kind: str, key: str, target: Path, parts: Mapping[str, Any], build: Callable[[Path], None]
    ) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
        try:
            build(tmp)
            files = {
                str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _file_sha256(p)}
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            }
            if not files:
                raise EngineCacheError(f"building {kind} entry {key} produced no files")
            manifest = {"format": _FORMAT_VERSION, "kind": kind, "key": key, "parts": dict(parts),
                        "files": files, "created": time.time()}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._verified.add(target)

    def _read_manifest(self, entry: Path) -> dict[str, Any] | None:
        try:
            manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None

    def _is_valid(self, entry: Path) -> bool:
        if entry in self._verified and (entry / MANIFEST).is_file():
            return True
        manifest = self._read_manifest(entry)
        if manifest is None:
            return False
        for name, meta in manifest["files"].items():
            path = entry / name
            try:
                if path.stat().st_size != meta["size"] or _file_sha256(path) != meta["sha256"]:
                    return False
            except (OSError, KeyError, TypeError):
                return False
        self._verified.add(entry)
        return True

    def entries(self) -> list[CacheEntry]:
        """Every valid entry, oldest first."""
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
                                      float(manifest.get("created", 0.0))))
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
