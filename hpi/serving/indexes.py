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
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
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


class IndexStore:
    """Indexes by key, persisted under ``root``; thread-safe.

    Args:
        root: directory holding one sub-directory per key (created on first save).
        default: the index used when a request gives no key (the server's ``--index`` or the pipeline's), or None.
        default_path: where ``default`` is saved after a change; None keeps changes to it in memory only.
        max_cached: indexes kept in memory; others are reloaded from disk when used.
    """

    def __init__(self, root: str | Path, *, default: FeatureIndex | None = None, default_path: str | Path | None = None,
                 max_cached: int = 32) -> None:
        if max_cached < 1:
            raise InvalidConfigError(f"max_cached must be positive, got {max_cached!r}")
        self.root = Path(root).expanduser()
        self.default = default
        self.default_path = Path(default_path) if default_path is not None else None
        self.max_cached = max_cached
        self._cache: OrderedDict[str, FeatureIndex] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

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
        index = FeatureIndex.load(path)
        self._remember(key, index)
        return index

    def _remember(self, key: str, index: FeatureIndex) -> None:
        with self._cache_lock:
            self._cache[key] = index
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)

    def _forget(self, key: str) -> None:
        with self._cache_lock:
            self._cache.pop(key, None)

    # ----------------------------------------------------------------------------------------------- changes

    def create(self, index: FeatureIndex) -> str:
        """Save a new index under a fresh key and return the key (only once it is on disk)."""
        key = self.new_key()
        with self._lock_for(key):
            index.save(self.root / key)
            self._remember(key, index)
        logger.info("index %s created with %d item(s) in %s", key, len(index), self.root / key)
        return key

    def append(self, key: str | None, features: Any, labels: Sequence[str]) -> dict[int, str]:
        """Add items to an index, save it, and return its id map."""
        return self._change(key, lambda index: index.append(features, labels))

    def remove(self, key: str | None, ids: Sequence[int]) -> dict[int, str]:
        """Remove items from an index (all or none: unknown ids raise ``UnknownIdError``), save it, and return
        its id map."""
        return self._change(key, lambda index: index.remove(ids))

    def _change(self, key: str | None, change: Any) -> dict[int, str]:
        if key is None:
            index = self.get(None)
            with self._lock_for(DEFAULT_KEY):
                change(index)
                if self.default_path is not None:
                    index.save(self.default_path)
                return index.id_map
        self._check_key(key)
        with self._lock_for(key):
            index = self._load_locked(key)
            change(index)
            try:
                index.save(self.root / key)
            except IndexFileError:
                self._forget(key)  # the next request reloads the last saved state
                raise
            return index.id_map
