"""PP-ShiTuV2 indexes created through the API, kept by key and saved after every change.

``/shitu-index-build`` makes an index and answers with its ``indexKey``, a random 128-bit hex string; the index is
saved under ``<root>/<indexKey>/`` (with :meth:`FeatureIndex.save`, which is atomic) before the key is returned,
and again after every add or remove, before the response. A restarted server therefore finds every index a client
was told about, in the state the client was last told.

Concurrent changes to one index are serialised by a per-key lock held from the change through its save, so an
add and a remove racing on one index both land, in some order, and the saved copy is the one in memory. Searches
take no key lock (:class:`FeatureIndex` is thread-safe). If a save fails the in-memory copy is dropped, so the next
request reloads the last saved state instead of serving an unsaved one.

Keys are checked against their format before they touch the file system: a key never names a path outside
``root``.

Quotas (:class:`IndexQuotas`) bound what clients can make the server store: the number of API-built indexes, the
vectors in one index, and the bytes all API-built indexes take on disk. The count and vector limits are checked
before any image is embedded; the byte limit by saving the changed index to a temporary directory outside ``root``
first and measuring it. A refused change leaves the disk and the served index as they were, and a create that fails
while saving removes whatever it had begun to write under ``root``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpi.errors import InvalidConfigError
from hpi.retrieval import FeatureIndex, IndexFileError
from hpi.serving.limits import RequestRejectedError

logger = logging.getLogger(__name__)

_KEY_RE = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_KEY = "default"  # how the server's configured index is named in errors and locks


class UnknownIndexError(RequestRejectedError):
    """An ``indexKey`` that names no index, or a request without one when the server has no default index."""

    status_code = 404


class QuotaExceededError(RequestRejectedError):
    """A change that would take the server's indexes over a quota; ``limit`` names the quota."""

    status_code = 403

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


MiB = 1 << 20


@dataclass(frozen=True)
class IndexQuotas:
    """What clients may make the server store through the index endpoints. ``hpi serve`` exposes each field."""

    max_indexes: int = 100  # API-built indexes under the index directory
    max_vectors_per_index: int = 100_000  # items in one index (the server's default index included)
    max_index_bytes: int = 1024 * MiB  # all API-built indexes together, on disk

    def __post_init__(self) -> None:
        for name in ("max_indexes", "max_vectors_per_index", "max_index_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidConfigError(f"IndexQuotas.{name} must be a positive integer, got {value!r}")


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue  # removed while we walked
    return total


def saved_size(index: FeatureIndex) -> int:
    """Bytes ``index`` takes when saved, measured by saving it to a temporary directory (removed again)."""
    with tempfile.TemporaryDirectory(prefix="hpi-index-size-") as tmp:
        return _tree_bytes(index.save(Path(tmp) / "index"))


class IndexStore:
    """Indexes by key, persisted under ``root``; thread-safe.

    Args:
        root: directory holding one sub-directory per key (created on first save).
        default: the index used when a request gives no key (the server's ``--index`` or the pipeline's), or None.
        default_path: where ``default`` is saved after a change; None keeps changes to it in memory only.
        max_cached: indexes kept in memory; others are reloaded from disk when used.
        quotas: limits on the indexes clients can create; default :class:`IndexQuotas`.
    """

    def __init__(self, root: str | Path, *, default: FeatureIndex | None = None, default_path: str | Path | None = None,
                 max_cached: int = 32, quotas: IndexQuotas | None = None) -> None:
        if max_cached < 1:
            raise InvalidConfigError(f"max_cached must be positive, got {max_cached!r}")
        self.root = Path(root).expanduser()
        self.default = default
        self.default_path = Path(default_path) if default_path is not None else None
        self.max_cached = max_cached
        self._cache: OrderedDict[str, FeatureIndex] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.quotas = quotas or IndexQuotas()
        self._quota_lock = threading.Lock()  # disk accounting: one create or change measures and saves at a time

    # ----------------------------------------------------------------------------------------------- keys

    @staticmethod
    def new_key() -> str:
        return uuid.uuid4().hex

    def _check_key(self, key: str) -> str:
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise UnknownIndexError(
                f"indexKey {str(key)[:80]!r} is not an index key; use the indexKey returned by /shitu-index-build"
            )
        return key

    def path_of(self, key: str) -> Path:
        return self.root / self._check_key(key)

    def _lock_for(self, key: str) -> threading.Lock:
        with self._cache_lock:
            lock = self._key_locks.get(key)
            if lock is None:
                lock = self._key_locks[key] = threading.Lock()
            return lock

    # ----------------------------------------------------------------------------------------------- access

    def get(self, key: str | None) -> FeatureIndex:
        """The index named ``key`` (loaded from disk if needed), or the default index when ``key`` is None.

        Raises:
            UnknownIndexError: no such index, or no key and no default index.
            IndexFileError: the saved index is damaged.
        """
        if key is None:
            if self.default is None:
                raise UnknownIndexError(
                    "no indexKey given and the server has no default index; build one with /shitu-index-build "
                    "and pass its indexKey, or start the server with --index DIR"
                )
            return self.default
        self._check_key(key)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        with self._lock_for(key):
            return self._load_locked(key)

    def _load_locked(self, key: str) -> FeatureIndex:
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        path = self.root / key
        if not path.is_dir():
            raise UnknownIndexError(f"no index with indexKey {key!r} on this server")
        index = self.load_quoted(path, f"index {key}")
        self._remember(key, index)
        return index

    def load_quoted(self, path: Path, name: str) -> FeatureIndex:
        """Load a saved index; a damaged one raises :class:`IndexFileError` naming ``name`` and the file relative to
        the index store (clients see the message: no server path in it)."""
        try:
            return FeatureIndex.load(path)
        except IndexFileError as exc:
            message = str(exc)
            for prefix in (f"{self.root}{os.sep}", f"{path.parent}{os.sep}"):
                message = message.replace(prefix, "")
            logger.error("%s at %s is damaged: %s", name, path, exc)  # the full path, for the operator
            raise IndexFileError(f"{name} is damaged: {message.strip(': ')}", path=exc.path) from exc

    def _remember(self, key: str, index: FeatureIndex) -> None:
        with self._cache_lock:
            self._cache[key] = index
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)

    def _forget(self, key: str) -> None:
        with self._cache_lock:
            self._cache.pop(key, None)

    # ----------------------------------------------------------------------------------------------- quotas

    def keys(self) -> list[str]:
        """The keys of the API-built indexes on disk."""
        try:
            return sorted(p.name for p in self.root.iterdir() if _KEY_RE.match(p.name) and p.is_dir())
        except FileNotFoundError:
            return []

    def disk_bytes(self, *, excluding: str | None = None) -> int:
        """Bytes the API-built indexes take on disk (all files under ``root``), less those of ``excluding``."""
        if not self.root.is_dir():
            return 0
        total = _tree_bytes(self.root)
        if excluding is not None and (self.root / excluding).is_dir():
            total -= _tree_bytes(self.root / excluding)
        return total

    def check_new_index(self, count: int) -> None:
        """Refuse, before any work, a new index of ``count`` items that a quota would not allow.

        Raises:
            QuotaExceededError: the server has ``max_indexes`` indexes, or ``count`` exceeds ``max_vectors_per_index``.
        """
        q = self.quotas
        existing = len(self.keys())
        if existing >= q.max_indexes:
            raise QuotaExceededError(
                f"quota max_indexes: this server already holds {existing} indexes built through the API, the limit "
                f"is {q.max_indexes}", limit="max_indexes")
        self._check_vectors(count, "the new index")

    def check_growth(self, key: str | None, extra: int) -> None:
        """Refuse, before any work, adding ``extra`` items to an index that would then exceed its quota."""
        self._check_vectors(len(self.get(key)) + extra, f"index {key or DEFAULT_KEY!r}")

    def _check_vectors(self, count: int, what: str) -> None:
        limit = self.quotas.max_vectors_per_index
        if count > limit:
            raise QuotaExceededError(
                f"quota max_vectors_per_index: {what} would hold {count} vectors, the limit is {limit}",
                limit="max_vectors_per_index")

    def _check_disk(self, index: FeatureIndex, key: str) -> None:
        """With the quota lock held: refuse saving ``index`` as ``key`` when all indexes would exceed the limit."""
        limit = self.quotas.max_index_bytes
        after = self.disk_bytes(excluding=key) + saved_size(index)
        if after > limit:
            raise QuotaExceededError(
                f"quota max_index_bytes: the indexes would take {after / MiB:.2f} MiB on disk, the limit is "
                f"{limit / MiB:.2f} MiB", limit="max_index_bytes")

    def _remove_partial(self, key: str, before: set[str]) -> None:
        """Remove what a failed create of ``key`` left under ``root`` (its directory, temporary and lock files)."""
        try:
            entries = list(self.root.iterdir())
        except FileNotFoundError:
            return
        for entry in entries:
            if key in entry.name and entry.name not in before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    # ----------------------------------------------------------------------------------------------- changes

    def create(self, index: FeatureIndex) -> str:
        """Save a new index under a fresh key and return the key (only once it is on disk).

        Raises:
            QuotaExceededError: a quota would be exceeded; nothing was written under ``root``.
            IndexFileError: saving failed; what it had begun to write under ``root`` is removed.
        """
        key = self.new_key()
        with self._quota_lock, self._lock_for(key):
            self.check_new_index(len(index))
            self._check_disk(index, key)
            before = {p.name for p in self.root.iterdir()} if self.root.is_dir() else set()
            try:
                index.save(self.root / key)
            except BaseException:
                self._remove_partial(key, before)
                raise
            self._remember(key, index)
        logger.info("index %s created with %d item(s) in %s", key, len(index), self.root / key)
        return key

    def append(self, key: str | None, features: Any, labels: Sequence[str]) -> dict[int, str]:
        """Add items to an index, save it, and return its id map.

        Raises:
            QuotaExceededError: the index would exceed a quota; it is left as it was, in memory and on disk.
        """
        def change(index: FeatureIndex) -> None:
            self._check_vectors(len(index) + len(labels), f"index {key or DEFAULT_KEY!r}")
            index.append(features, labels)

        return self._change(key, change)

    def remove(self, key: str | None, ids: Sequence[int]) -> dict[int, str]:
        """Remove items from an index (all or none: unknown ids raise ``UnknownIdError``), save it, and return
        its id map."""
        return self._change(key, lambda index: index.remove(ids))

    def _change(self, key: str | None, change: Callable[[FeatureIndex], Any]) -> dict[int, str]:
        if key is None:
            index = self.get(None)
            with self._lock_for(DEFAULT_KEY):
                change(index)
                if self.default_path is not None:
                    index.save(self.default_path)
                return index.id_map
        self._check_key(key)
        with self._quota_lock, self._lock_for(key):
            index = self._load_locked(key)
            change(index)
            try:
                self._check_disk(index, key)
                index.save(self.root / key)
            except (IndexFileError, QuotaExceededError):
                self._forget(key)  # the next request reloads the last saved state
                raise
            return index.id_map
