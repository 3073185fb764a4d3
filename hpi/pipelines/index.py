"""The vector index behind PP-ShiTuV2 retrieval: faiss under a small class with stable integer ids.

A :class:`FeatureIndex` holds gallery features (one row per gallery image), a label per row and a faiss index over
them. Ids are integers handed out in order and never reused, so an id a client got back from ``append`` still names
the same item after other items were removed, after a rebuild and after ``save``/``load``; ``id_map`` is the
``idMap`` of PaddleX's serving protocol (id -> label).

Index types follow PaddleX's ``build_index``: ``"HNSW32"`` (graph, approximate), ``"IVF"`` (inverted lists, trained
k-means, approximate) and ``"Flat"`` (exact). Metrics: ``"IP"`` (inner product; the caller L2-normalises features so
it is the cosine similarity, higher is better) and ``"L2"`` (the *squared* Euclidean distance, as faiss and PaddleX
report it, lower is better; results are then in ascending order). For one metric the three index types return the
same numbers for the same pair of vectors, so a score threshold means the same thing whichever type was built.

Ids. IVF stores our ids itself. Flat and HNSW hold vectors by position, and a sorted position -> id array maps
them back (positions follow id order, because ids only grow and rebuilds keep that order); faiss's ``IndexIDMap``
is not used, because its per-search OpenMP loop for translating ids made single-query latency jump tenfold when
the two cores were busy.

Removal. Flat and IVF remove vectors from faiss itself. faiss's HNSW graph cannot drop a node, so removed HNSW items
become tombstones: they stay in the graph (the search still walks through them, which keeps the graph connected) but
an ``IDSelector`` excludes them from results; every hit is also checked against the live labels. When the graph
search returns fewer than ``min(k, len(index))`` live hits (many tombstones near the query, or an IVF probe that
visited too few lists), that query is answered by an exact scan over the kept vectors instead. When tombstones
exceed ``rebuild_ratio`` of the graph, the index is rebuilt from the kept vectors, which is why the raw vectors of
every live item are kept in memory and saved.

Saving writes every file into a temporary directory beside the target, fsyncs it and swaps it in with two renames
(old -> ``.<name>.previous``, new -> target) under a file lock; ``load`` and the next ``save`` finish or undo a swap
that a crash interrupted. A file that is missing, truncated or altered fails its size / SHA-256 check in
``meta.json`` and raises :class:`IndexFileError` naming it, before faiss reads anything.

>>> import numpy as np
>>> feats = np.eye(4, dtype=np.float32)
>>> index = FeatureIndex(feats, ["a", "b", "c", "d"], index_type="Flat", metric_type="IP")
>>> index.search(feats[1], k=1)
[[Hit(id=1, label='b', score=1.0)]]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

import numpy as np

from hpi.errors import (
    BackendUnavailableError,
    HpiError,
    HpiInternalError,
    InvalidConfigError,
    InvalidInputError,
)

logger = logging.getLogger(__name__)

IndexType = Literal["HNSW32", "IVF", "Flat"]
MetricType = Literal["IP", "L2"]
INDEX_TYPES: tuple[str, ...] = ("HNSW32", "IVF", "Flat")
METRIC_TYPES: tuple[str, ...] = ("IP", "L2")

FORMAT_NAME = "hpi-feature-index"
FORMAT_VERSION = 1
META_FILE = "meta.json"
FAISS_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.npy"
ID_MAP_FILE = "id_map.json"

HNSW_M = 32
# faiss's own efSearch default (16) loses recall on 512-d features; 64 stays well under 1 ms per query on 100k
# vectors (benchmarks/index_bench.py). Pass ef_search= to trade speed for recall.
DEFAULT_EF_SEARCH = 64
# faiss warns below 39 training points per centroid; PaddleX's num // 8 fails for fewer than 8 vectors.
MIN_POINTS_PER_LIST = 39
MAX_NLIST = 65536
# An IVF index trained on n vectors is retrained once it holds this many times n (its lists got too long).
IVF_RETRAIN_GROWTH = 4
DEFAULT_REBUILD_RATIO = 0.25


class IndexFileError(HpiError):
    """An index directory cannot be written, or a file in it is missing, truncated, altered or of another format.

    Attributes:
        path: the file or directory at fault.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str]) -> None:
        super().__init__(message)
        self.path = Path(path)


class UnknownIdError(InvalidInputError):
    """``remove`` was given ids that the index does not hold (never added, or removed already).

    Attributes:
        ids: the unknown ids, in the order given.
    """

    def __init__(self, ids: Sequence[int], live_count: int) -> None:
        shown = ", ".join(str(i) for i in ids[:20]) + (", ..." if len(ids) > 20 else "")
        super().__init__(
            f"{len(ids)} id(s) not in the index: {shown}; the index holds {live_count} item(s), see id_map; "
            "nothing was removed (pass missing_ok=True to skip unknown ids)"
        )
        self.ids = tuple(ids)


class Hit(NamedTuple):
    """One search result: the item's id, its label and its score (see the module docstring for its meaning)."""

    id: int
    label: str
    score: float


def ivf_nlist(count: int) -> int:
    """Number of IVF lists for ``count`` training vectors: about ``4 * sqrt(count)``, at least 39 vectors per list.

    Args:
        count: number of vectors the IVF quantizer is trained on.

    >>> ivf_nlist(10), ivf_nlist(1000), ivf_nlist(100_000)
    (1, 25, 1264)
    """
    return max(1, min(MAX_NLIST, int(4 * math.sqrt(count)), count // MIN_POINTS_PER_LIST))


def ivf_nprobe(nlist: int) -> int:
    """Lists an IVF search visits by default: all of them up to 8 lists, then ``ceil(sqrt(nlist))``."""
    return min(nlist, max(8, math.ceil(math.sqrt(nlist))))


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise BackendUnavailableError(
            "the feature index needs faiss, which is not installed; install it with: pip install 'hpi[retrieval]' "
            "(faiss-cpu)"
        ) from exc
    return faiss


class _VectorStore:
    """Rows of (id, vector) with a live flag: what every faiss index is built from, and what gets saved.

    Appending grows the buffers geometrically, so adding a few vectors to a large store does not copy it all.
    Removed rows stay (flagged dead) until :meth:`compact`.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vectors = np.empty((0, dim), dtype=np.float32)
        self._ids = np.empty(0, dtype=np.int64)
        self._alive = np.empty(0, dtype=bool)
        self._size = 0
        self._row_of: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._row_of)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        need = self._size + len(ids)
        if need > len(self._ids):
            capacity = max(need, 2 * len(self._ids), 1024)
            self._vectors = _grown(self._vectors, capacity, self._size)
            self._ids = _grown(self._ids, capacity, self._size)
            self._alive = _grown(self._alive, capacity, self._size)
        rows = slice(self._size, need)
        self._vectors[rows] = vectors
        self._ids[rows] = ids
        self._alive[rows] = True
        for offset, item_id in enumerate(ids.tolist()):
            self._row_of[item_id] = self._size + offset
        self._size = need

    def kill(self, ids: Iterable[int]) -> None:
        for item_id in ids:
            self._alive[self._row_of.pop(item_id)] = False

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the live ids and vectors, in the order they were added."""
        mask = self._alive[: self._size]
        return self._ids[: self._size][mask], self._vectors[: self._size][mask]

    def compact(self) -> None:
        """Drop dead rows (the buffers shrink to the live count)."""
        if len(self._row_of) == self._size:
            return
        ids, vectors = self.live()
        self._vectors, self._ids, self._alive = vectors, ids, np.ones(len(ids), dtype=bool)
        self._size = len(ids)
        self._row_of = {item_id: row for row, item_id in enumerate(ids.tolist())}

    def exact_search(self, query: np.ndarray, k: int, metric_type: str) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` live (ids, scores) for one query by a full scan, scored as faiss scores them."""
        vectors = self._vectors[: self._size]
        if metric_type == "IP":
            keys = -(vectors @ query)
        else:
            keys = np.einsum("ij,ij->i", vectors, vectors) - 2.0 * (vectors @ query) + float(query @ query)
            np.maximum(keys, 0.0, out=keys)
        keys[~self._alive[: self._size]] = np.inf
        k = min(k, len(self._row_of))
        top = np.argpartition(keys, k - 1)[:k] if k < len(keys) else np.arange(len(keys))
        top = top[np.lexsort((self._ids[top], keys[top]))]
        scores = -keys[top] if metric_type == "IP" else keys[top]
        return self._ids[top], scores


def _grown(array: np.ndarray, capacity: int, used: int) -> np.ndarray:
    grown = np.empty((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[:used] = array[:used]
    return grown


@dataclass(frozen=True)
class _Snapshot:
    """Everything ``save`` writes, copied under the index lock so writing needs no lock."""

    meta: dict[str, Any]
    faiss_bytes: np.ndarray | None
    ids: np.ndarray
    vectors: np.ndarray
    id_map: dict[int, str]


class FeatureIndex:
    """Gallery features, their labels and a faiss index over them, with stable ids. Thread-safe.

    Args:
        features: float32-convertible array ``[N, D]``; L2-normalised by the caller when ``metric_type="IP"``.
            ``N`` may be 0 (an empty index of dimension ``D``).
        labels: one non-empty string per row of ``features``.
        index_type: ``"HNSW32"``, ``"IVF"`` or ``"Flat"``, as in PaddleX's ``build_index``.
        metric_type: ``"IP"`` (higher is better) or ``"L2"`` (squared distance, lower is better).
        ef_search: HNSW search depth; ``None`` means ``DEFAULT_EF_SEARCH`` (64). Ignored by other types.
        nprobe: IVF lists visited per query; ``None`` means :func:`ivf_nprobe` of the current list count.
        rebuild_ratio: HNSW is rebuilt from the kept vectors once removed items exceed this fraction of the graph.

    Items get ids ``0 .. N-1`` in row order; ``append`` continues from the highest id ever given.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> feats = rng.standard_normal((100, 8)).astype(np.float32)
        >>> feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        >>> index = FeatureIndex(feats, [f"item{i}" for i in range(100)], index_type="HNSW32")
        >>> index.append(feats[:2], ["copy0", "copy1"])
        [100, 101]
        >>> index.remove([0, 100])
        2
        >>> len(index), 0 in index, 0 in {hit.id for hit in index.search(feats[0], k=100)[0]}
        (100, False, False)
    """

    def __init__(
        self,
        features: Any,
        labels: Sequence[str],
        *,
        index_type: IndexType = "HNSW32",
        metric_type: MetricType = "IP",
        ef_search: int | None = None,
        nprobe: int | None = None,
        rebuild_ratio: float = DEFAULT_REBUILD_RATIO,
    ) -> None:
        vectors = _as_matrix(features, dim=None, what="features")
        label_list = _as_labels(labels, len(vectors))
        self._setup(vectors.shape[1], index_type, metric_type, ef_search, nprobe, rebuild_ratio)
        with self._lock:
            ids = np.arange(len(vectors), dtype=np.int64)
            self._store.add(ids, vectors)
            self._labels.update(zip(ids.tolist(), label_list, strict=True))
            self._next_id = len(vectors)
            self._rebuild_locked()

    def _setup(
        self,
        dim: int,
        index_type: str,
        metric_type: str,
        ef_search: int | None,
        nprobe: int | None,
        rebuild_ratio: float,
    ) -> None:
        if index_type not in INDEX_TYPES:
            raise InvalidConfigError(
                f"index_type {index_type!r} is not supported; available: {', '.join(INDEX_TYPES)}"
            )
        if metric_type not in METRIC_TYPES:
            raise InvalidConfigError(
                f"metric_type {metric_type!r} is not supported; available: {', '.join(METRIC_TYPES)}"
            )
        for name, value in (("ef_search", ef_search), ("nprobe", nprobe)):
            if value is not None and (not _is_int(value) or value < 1):
                raise InvalidConfigError(f"{name} must be a positive integer or None, got {value!r}")
        if not 0.0 < rebuild_ratio <= 1.0:
            raise InvalidConfigError(f"rebuild_ratio must be in (0, 1], got {rebuild_ratio!r}")
        self._faiss = _import_faiss()
        self._lock = threading.RLock()
        self._dim = dim
        self._index_type = index_type
        self._metric_type = metric_type
        self._ef_search = DEFAULT_EF_SEARCH if ef_search is None else int(ef_search)
        self._nprobe_override = None if nprobe is None else int(nprobe)
        self._rebuild_ratio = float(rebuild_ratio)
        self._store = _VectorStore(dim)
        self._labels: dict[int, str] = {}
        self._next_id = 0
        self._tombstones: set[int] = set()
        self._index: Any = None
        # Flat and HNSW: the id of each faiss position, ascending (tombstones included). Unused by IVF.
        self._position_ids = np.empty(0, dtype=np.int64)
        self._search_params: Any = None
        self._selector_refs: tuple[Any, ...] = ()
        self._nlist = 0
        self._trained_count = 0

    # ----------------------------------------------------------------------------------------------- properties

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return self._dim

    @property
    def index_type(self) -> str:
        return self._index_type

    @property
    def metric_type(self) -> str:
        return self._metric_type

    @property
    def ef_search(self) -> int:
        """HNSW search depth (candidates kept while walking the graph); settable, no rebuild needed."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if not _is_int(value) or value < 1:
            raise InvalidConfigError(f"ef_search must be a positive integer, got {value!r}")
        with self._lock:
            self._ef_search = int(value)
            self._refresh_search_params()

    @property
    def nprobe(self) -> int:
        """IVF lists visited per query (0 for other types); settable, ``None`` restores the derived default."""
        with self._lock:
            return self._nprobe() if self._index_type == "IVF" else 0

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        if value is not None and (not _is_int(value) or value < 1):
            raise InvalidConfigError(f"nprobe must be a positive integer or None, got {value!r}")
        with self._lock:
            self._nprobe_override = None if value is None else int(value)
            self._refresh_search_params()

    @property
    def higher_is_better(self) -> bool:
        """True for ``"IP"`` (similarity), False for ``"L2"`` (squared distance)."""
        return self._metric_type == "IP"

    @property
    def id_map(self) -> dict[int, str]:
        """A copy of id -> label for every live item, in id order (the serving protocol's ``idMap``)."""
        with self._lock:
            return dict(sorted(self._labels.items()))

    def __len__(self) -> int:
        """Number of live items (removed ones are not counted, even while HNSW still holds them)."""
        with self._lock:
            return len(self._labels)

    def __contains__(self, item_id: object) -> bool:
        with self._lock:
            return item_id in self._labels

    def __repr__(self) -> str:
        with self._lock:
            return (
                f"FeatureIndex(index_type={self._index_type!r}, metric_type={self._metric_type!r}, dim={self._dim}, "
                f"items={len(self._labels)}, tombstones={len(self._tombstones)})"
            )

    # ----------------------------------------------------------------------------------------------- operations

    def append(self, features: Any, labels: Sequence[str]) -> list[int]:
        """Add items and return their new ids, in row order.

        Args:
            features: ``[M, D]`` array, same dimension (and normalisation) as the index.
            labels: one non-empty string per row.

        Returns:
            The ``M`` new ids; they are larger than any id given before.
        """
        vectors = _as_matrix(features, dim=self._dim, what="features")
        label_list = _as_labels(labels, len(vectors))
        with self._lock:
            ids = np.arange(self._next_id, self._next_id + len(vectors), dtype=np.int64)
            self._store.add(ids, vectors)
            self._labels.update(zip(ids.tolist(), label_list, strict=True))
            self._next_id += len(vectors)
            if self._index is None or self._ivf_needs_retraining():
                self._rebuild_locked()
            elif len(vectors):
                self._add_to_faiss(ids, vectors)
        return ids.tolist()

    def remove(self, ids: Iterable[int], *, missing_ok: bool = False) -> int:
        """Remove items by id; the other ids do not change.

        Args:
            ids: ids to remove; duplicates count once.
            missing_ok: skip ids the index does not hold instead of raising.

        Returns:
            How many items were removed.

        Raises:
            UnknownIdError: some ids are not in the index and ``missing_ok`` is False; nothing is removed then.
        """
        wanted = _as_ids(ids)
        with self._lock:
            unknown = [item_id for item_id in wanted if item_id not in self._labels]
            if unknown and not missing_ok:
                raise UnknownIdError(unknown, len(self._labels))
            known = [item_id for item_id in wanted if item_id in self._labels]
            if not known:
                return 0
            self._store.kill(known)
            for item_id in known:
                del self._labels[item_id]
            if self._index_type == "HNSW32":
                self._tombstones.update(known)
                if len(self._tombstones) > self._rebuild_ratio * self._index.ntotal:
                    self._rebuild_locked()
                else:
                    self._refresh_search_params()
            elif self._index_type == "IVF":
                self._remove_from_faiss(np.asarray(known, dtype=np.int64))
            else:
                positions = np.searchsorted(self._position_ids, np.asarray(sorted(known), dtype=np.int64))
                self._remove_from_faiss(positions)
                self._position_ids = np.delete(self._position_ids, positions)
            return len(known)

    def search(self, queries: Any, k: int = 1) -> list[list[Hit]]:
        """The ``k`` best live items for each query.

        Args:
            queries: ``[Q, D]`` array, or one ``[D]`` vector (then one result list is returned).
            k: results per query; fewer come back only when the index holds fewer than ``k`` items.

        Returns:
            One list per query of :class:`Hit` ``(id, label, score)``, best first: descending inner product for
            ``"IP"``, ascending squared L2 distance for ``"L2"``.
        """
        if not _is_int(k) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        matrix = _as_matrix(queries, dim=self._dim, what="queries", allow_vector=True)
        with self._lock:
            live = len(self._labels)
            if live == 0 or len(matrix) == 0:
                return [[] for _ in range(len(matrix))]
            want = min(int(k), live)
            scores, found = self._index.search(matrix, want, params=self._search_params)
            if self._index_type != "IVF":
                found = np.where(found >= 0, self._position_ids[np.maximum(found, 0)], -1)
            results = []
            for row in range(len(matrix)):
                hits = [
                    Hit(item_id, self._labels[item_id], float(score))
                    for item_id, score in zip(found[row].tolist(), scores[row].tolist(), strict=True)
                    if item_id in self._labels
                ]
                if len(hits) < want:
                    exact_ids, exact_scores = self._store.exact_search(matrix[row], want, self._metric_type)
                    hits = [
                        Hit(item_id, self._labels[item_id], float(score))
                        for item_id, score in zip(exact_ids.tolist(), exact_scores.tolist(), strict=True)
                    ]
                results.append(hits)
            return results

    def rebuild(self) -> None:
        """Rebuild the faiss index from the kept vectors: drops HNSW tombstones, retrains IVF for the current size."""
        with self._lock:
            self._rebuild_locked()

    # ----------------------------------------------------------------------------------------------- internals

    def _rebuild_locked(self) -> None:
        self._store.compact()
        ids, vectors = self._store.live()
        self._tombstones.clear()
        if len(ids) == 0:
            self._index = None
            self._nlist = 0
            self._trained_count = 0
        else:
            self._index = self._new_faiss_index(vectors)
        self._position_ids = np.empty(0, dtype=np.int64)
        if len(ids):
            self._add_to_faiss(ids, vectors)
        self._refresh_search_params()
        logger.debug("rebuilt %r", self)

    def _new_faiss_index(self, training: np.ndarray) -> Any:
        faiss = self._faiss
        metric = faiss.METRIC_INNER_PRODUCT if self._metric_type == "IP" else faiss.METRIC_L2
        if self._index_type == "Flat":
            return faiss.IndexFlat(self._dim, metric)
        if self._index_type == "HNSW32":
            return faiss.IndexHNSWFlat(self._dim, HNSW_M, metric)
        self._nlist = ivf_nlist(len(training))
        self._trained_count = len(training)
        logger.debug(
            "IVF: %d lists for %d vectors, %d probed per query (pass nprobe= to change)",
            self._nlist,
            len(training),
            self._nprobe(),
        )
        index = faiss.index_factory(self._dim, f"IVF{self._nlist},Flat", metric)
        index.train(training)
        return index

    def _add_to_faiss(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self._index_type == "IVF":
            self._index.add_with_ids(vectors, ids)
        else:
            self._index.add(vectors)
            self._position_ids = np.concatenate([self._position_ids, ids])

    def _remove_from_faiss(self, faiss_ids: np.ndarray) -> None:
        removed = self._index.remove_ids(faiss_ids)
        if removed != len(faiss_ids):
            raise HpiInternalError(f"faiss removed {removed} of {len(faiss_ids)} vectors held by the index")

    def _nprobe(self) -> int:
        if self._nprobe_override is not None:
            return min(self._nprobe_override, max(self._nlist, 1))
        return ivf_nprobe(max(self._nlist, 1))

    def _ivf_needs_retraining(self) -> bool:
        return (
            self._index_type == "IVF"
            and len(self._labels) >= IVF_RETRAIN_GROWTH * self._trained_count
            and ivf_nlist(len(self._labels)) > self._nlist
        )

    def _refresh_search_params(self) -> None:
        faiss = self._faiss
        self._selector_refs = ()
        if self._index_type == "Flat":
            self._search_params = None
        elif self._index_type == "IVF":
            self._search_params = faiss.SearchParametersIVF()
            self._search_params.nprobe = self._nprobe()
        else:
            self._search_params = faiss.SearchParametersHNSW()
            self._search_params.efSearch = self._ef_search
            if self._tombstones:
                tombstones = np.fromiter(
                    sorted(self._tombstones), dtype=np.int64, count=len(self._tombstones)
                )
                removed = faiss.IDSelectorBatch(np.searchsorted(self._position_ids, tombstones))
                kept = faiss.IDSelectorNot(removed)
                # SWIG does not keep the selectors alive through params.sel: hold them here.
                self._selector_refs = (removed, kept)
                self._search_params.sel = kept

    # ----------------------------------------------------------------------------------------------- persistence

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to ``directory``, replacing a previous index there atomically.

        The directory ends up with ``index.faiss``, ``vectors.npy``, ``ids.npy``, ``id_map.json`` and
        ``meta.json`` (format version, index type, metric, dimension, counts and a size + SHA-256 per file). A save
        that fails or is killed half-way leaves the previous index at ``directory`` loadable.

        Args:
            directory: target directory; created with its parents. An existing directory that is not an index
                is never replaced.

        Returns:
            The absolute path of the saved index.
        """
        target = Path(os.path.abspath(directory))
        snapshot = self._snapshot()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexFileError(
                f"cannot create {target.parent} to save the index: {exc}", path=target
            ) from exc
        with _directory_lock(target, required=True):
            staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
            try:
                _finish_interrupted_swap(target)
                if (
                    target.exists()
                    and not (target / META_FILE).is_file()
                    and (not target.is_dir() or any(target.iterdir()))
                ):
                    raise IndexFileError(
                        f"{target} exists and is not a saved index (no {META_FILE}); refusing to replace it",
                        path=target,
                    )
                for stale in target.parent.glob(f".{target.name}.tmp-*"):
                    # Left by a save that crashed: nobody else can be writing it while we hold the lock.
                    shutil.rmtree(stale, ignore_errors=True)
                staging.mkdir()
                _write_index_files(staging, snapshot)
                _swap_in(staging, target)
            except OSError as exc:
                raise IndexFileError(f"cannot save the index to {target}: {exc}", path=target) from exc
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        return target

    def _snapshot(self) -> _Snapshot:
        with self._lock:
            ids, vectors = self._store.live()
            faiss_bytes = None if self._index is None else self._faiss.serialize_index(self._index)
            meta = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "index_type": self._index_type,
                "metric_type": self._metric_type,
                "dim": self._dim,
                "count": len(ids),
                "next_id": self._next_id,
                "tombstones": sorted(self._tombstones),
                "ef_search": self._ef_search,
                "nprobe": self._nprobe_override,
                "nlist": self._nlist,
                "trained_count": self._trained_count,
                "rebuild_ratio": self._rebuild_ratio,
                "faiss_version": getattr(self._faiss, "__version__", "unknown"),
            }
            id_map = {item_id: self._labels[item_id] for item_id in ids.tolist()}
            return _Snapshot(meta, faiss_bytes, ids, vectors, id_map)

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, ef_search: int | None = None, nprobe: int | None = None
    ) -> FeatureIndex:
        """Read an index written by :meth:`save`.

        Args:
            directory: the directory given to ``save``.
            ef_search: override the saved HNSW search depth.
            nprobe: override the saved IVF probe count.

        Raises:
            IndexFileError: the directory or one of its files is missing, truncated, altered, inconsistent with
                the others, or of another format version. The message names the file.
        """
        target = Path(os.path.abspath(directory))
        if not target.parent.is_dir():
            raise IndexFileError(f"no saved index at {target}: {target.parent} does not exist", path=target)
        with _directory_lock(target, required=False):
            with contextlib.suppress(OSError):
                _finish_interrupted_swap(target)
            source = target
            if not target.is_dir() and _backup_path(target).is_dir():
                source = _backup_path(target)  # read-only place where a swap was interrupted
            if not source.is_dir():
                raise IndexFileError(f"no saved index at {target}: the directory does not exist", path=target)
            return cls._read(source, ef_search=ef_search, nprobe=nprobe)

    @classmethod
    def _read(cls, directory: Path, *, ef_search: int | None, nprobe: int | None) -> FeatureIndex:
        meta = _read_meta(directory / META_FILE)
        for name, record in meta["files"].items():
            _verify_file(directory / name, record)
        count, dim = meta["count"], meta["dim"]
        ids = _read_npy(directory / IDS_FILE, shape=(count,), dtype=np.int64)
        vectors = _read_npy(directory / VECTORS_FILE, shape=(count, dim), dtype=np.float32)
        id_map = _read_id_map(directory / ID_MAP_FILE)
        tombstones = meta["tombstones"]
        id_list = ids.tolist()
        if len(set(id_list)) != count or set(id_map) != set(id_list):
            raise IndexFileError(
                f"{directory / ID_MAP_FILE} does not list the same ids as {directory / IDS_FILE}",
                path=directory / ID_MAP_FILE,
            )
        if set(tombstones) & set(id_list) or max([-1, *id_list, *tombstones]) >= meta["next_id"]:
            raise IndexFileError(
                f"{directory / META_FILE}: tombstones or next_id contradict {directory / IDS_FILE}",
                path=directory / META_FILE,
            )

        index = cls.__new__(cls)
        index._setup(
            dim,
            meta["index_type"],
            meta["metric_type"],
            meta["ef_search"] if ef_search is None else ef_search,
            meta["nprobe"] if nprobe is None else nprobe,
            meta["rebuild_ratio"],
        )
        index._store.add(ids, vectors)
        index._labels = {item_id: id_map[item_id] for item_id in id_list}
        index._next_id = meta["next_id"]
        index._tombstones = set(tombstones)
        index._nlist = meta["nlist"]
        index._trained_count = meta["trained_count"]
        if count + len(tombstones) > 0:
            index._index = _read_faiss(index._faiss, directory / FAISS_FILE, meta, count + len(tombstones))
        if index._index_type != "IVF":
            index._position_ids = np.array(sorted([*id_list, *tombstones]), dtype=np.int64)
        index._refresh_search_params()
        return index


# --------------------------------------------------------------------------------------------------- validation


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _as_matrix(data: Any, *, dim: int | None, what: str, allow_vector: bool = False) -> np.ndarray:
    try:
        matrix = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what} must be a numeric array [N, D], got {type(data).__name__}: {exc}"
        ) from exc
    if allow_vector and matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        expected = "[N, D] or [D]" if allow_vector else "[N, D]"
        raise InvalidInputError(
            f"{what} must be a 2-D array {expected} with D >= 1, got shape {matrix.shape}"
        )
    if dim is not None and matrix.shape[1] != dim:
        raise InvalidInputError(f"{what} have dimension {matrix.shape[1]}, the index has dimension {dim}")
    if not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise InvalidInputError(f"{what} row {bad} contains NaN or infinity")
    return np.ascontiguousarray(matrix)


def _as_labels(labels: Sequence[str], count: int) -> list[str]:
    if isinstance(labels, str):
        raise InvalidInputError(
            "labels must be a sequence of strings, one per feature row, not a single string"
        )
    label_list = list(labels)
    if len(label_list) != count:
        raise InvalidInputError(f"got {len(label_list)} labels for {count} feature rows")
    for position, label in enumerate(label_list):
        if not isinstance(label, str) or not label:
            raise InvalidInputError(f"label {position} must be a non-empty string, got {label!r}")
    return [str(label) for label in label_list]


def _as_ids(ids: Iterable[int]) -> list[int]:
    if isinstance(ids, str | bytes) or _is_int(ids):
        raise InvalidInputError(f"ids must be a sequence of integers, got {ids!r}")
    wanted: dict[int, None] = {}
    for item_id in ids:
        if not _is_int(item_id):
            raise InvalidInputError(f"ids must be integers, got {item_id!r}")
        wanted[int(item_id)] = None
    return list(wanted)


# --------------------------------------------------------------------------------------------------- files


def _backup_path(target: Path) -> Path:
    return target.parent / f".{target.name}.previous"


@contextlib.contextmanager
def _directory_lock(target: Path, *, required: bool) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``target``; a reader on a read-only filesystem goes on without it."""
    from filelock import FileLock

    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    acquired = False
    try:
        lock.acquire()
        acquired = True
    except OSError as exc:
        if required:
            raise IndexFileError(f"cannot lock {target} for writing: {exc}", path=target) from exc
    try:
        yield
    finally:
        if acquired:
            lock.release()


def _finish_interrupted_swap(target: Path) -> None:
    """Undo or complete a swap that crashed between its two renames. Call with the directory lock held."""
    backup = _backup_path(target)
    if not backup.exists():
        return
    if target.exists():
        shutil.rmtree(backup)  # the new index made it in; only the old copy's removal was missed
    else:
        os.rename(backup, target)  # crashed after moving the old index away: put it back
        _fsync_directory(target.parent)


def _swap_in(staging: Path, target: Path) -> None:
    backup = _backup_path(target)
    if target.exists():
        os.rename(target, backup)
    os.rename(staging, target)
    _fsync_directory(target.parent)
    if backup.exists():
        shutil.rmtree(backup)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_index_files(staging: Path, snapshot: _Snapshot) -> None:
    files: dict[str, dict[str, Any]] = {}
    if snapshot.faiss_bytes is not None:
        files[FAISS_FILE] = _write_file(staging / FAISS_FILE, snapshot.faiss_bytes.tofile)
    files[VECTORS_FILE] = _write_file(
        staging / VECTORS_FILE, lambda handle: np.save(handle, snapshot.vectors, allow_pickle=False)
    )
    files[IDS_FILE] = _write_file(
        staging / IDS_FILE, lambda handle: np.save(handle, snapshot.ids, allow_pickle=False)
    )
    id_map_json = json.dumps({str(k): v for k, v in snapshot.id_map.items()}, ensure_ascii=False)
    files[ID_MAP_FILE] = _write_file(staging / ID_MAP_FILE, lambda handle: handle.write(id_map_json.encode()))
    # meta.json goes last: a directory without it was never a complete index.
    meta_json = json.dumps({**snapshot.meta, "files": files}, ensure_ascii=False, indent=2)
    _write_file(staging / META_FILE, lambda handle: handle.write(meta_json.encode()))
    _fsync_directory(staging)


def _write_file(path: Path, write: Callable[[IO[bytes]], Any]) -> dict[str, Any]:
    """Write, flush and fsync ``path``; return its size and SHA-256 as read back from disk."""
    with open(path, "xb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


_META_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "version": int,
    "index_type": str,
    "metric_type": str,
    "dim": int,
    "count": int,
    "next_id": int,
    "tombstones": list,
    "ef_search": int,
    "nprobe": (int, type(None)),
    "nlist": int,
    "trained_count": int,
    "rebuild_ratio": (float, int),
    "files": dict,
}


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IndexFileError(
            f"{path} is missing: not a saved index, or an incomplete one", path=path
        ) from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IndexFileError(
            f"{path} is unreadable or not valid JSON (truncated or corrupted): {exc}", path=path
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise IndexFileError(
            f"{path} is not an hpi feature index (expected format {FORMAT_NAME!r})", path=path
        )
    if meta.get("version") != FORMAT_VERSION:
        raise IndexFileError(
            f"{path} has format version {meta.get('version')!r}; this hpi reads version {FORMAT_VERSION}",
            path=path,
        )
    for field, kind in _META_FIELDS.items():
        if not isinstance(meta.get(field), kind) or isinstance(meta.get(field), bool):
            raise IndexFileError(f"{path}: field {field!r} is missing or has the wrong type", path=path)
    if meta["index_type"] not in INDEX_TYPES or meta["metric_type"] not in METRIC_TYPES or meta["dim"] < 1:
        raise IndexFileError(
            f"{path}: index_type {meta['index_type']!r}, metric_type {meta['metric_type']!r} or dim {meta['dim']} "
            "is not valid",
            path=path,
        )
    if not all(_is_int(item) for item in meta["tombstones"]):
        raise IndexFileError(f"{path}: tombstones must be integer ids", path=path)
    if (
        min(meta["count"], meta["next_id"], meta["nlist"], meta["trained_count"]) < 0
        or meta["ef_search"] < 1
        or (meta["nprobe"] is not None and meta["nprobe"] < 1)
        or not 0 < meta["rebuild_ratio"] <= 1
    ):
        raise IndexFileError(
            f"{path}: a count, ef_search, nprobe or rebuild_ratio is out of range", path=path
        )
    required = {VECTORS_FILE, IDS_FILE, ID_MAP_FILE} | (
        {FAISS_FILE} if meta["count"] or meta["tombstones"] else set()
    )
    if not required <= set(meta["files"]) or not set(meta["files"]) <= required | {FAISS_FILE}:
        raise IndexFileError(
            f"{path}: lists files {sorted(meta['files'])}, expected {sorted(required)}", path=path
        )
    for name, record in meta["files"].items():
        if not (
            isinstance(record, dict) and _is_int(record.get("size")) and isinstance(record.get("sha256"), str)
        ):
            raise IndexFileError(f"{path}: the record of {name} lacks its size or sha256", path=path)
    return meta


def _verify_file(path: Path, record: dict[str, Any]) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise IndexFileError(f"{path} is missing from the saved index", path=path) from exc
    except OSError as exc:
        raise IndexFileError(f"{path} is unreadable: {exc}", path=path) from exc
    if size != record["size"]:
        raise IndexFileError(
            f"{path} is {size} bytes, {META_FILE} records {record['size']}: the file is truncated or was replaced",
            path=path,
        )
    try:
        digest = _sha256(path)
    except OSError as exc:
        raise IndexFileError(f"{path} is unreadable: {exc}", path=path) from exc
    if digest != record["sha256"]:
        raise IndexFileError(
            f"{path} fails its SHA-256 check against {META_FILE}: the file is corrupted", path=path
        )


def _read_npy(path: Path, *, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{path} is not a readable .npy array: {exc}", path=path) from exc
    if array.shape != shape or array.dtype != dtype:
        raise IndexFileError(
            f"{path} holds {array.dtype} {array.shape}, expected {np.dtype(dtype)} {shape}", path=path
        )
    return np.ascontiguousarray(array)


def _read_id_map(path: Path) -> dict[int, str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        id_map = {int(key): value for key, value in raw.items()}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise IndexFileError(f"{path} is not a JSON object of id -> label: {exc}", path=path) from exc
    if not all(isinstance(label, str) and label for label in id_map.values()):
        raise IndexFileError(f"{path}: every label must be a non-empty string", path=path)
    return id_map


def _read_faiss(faiss: Any, path: Path, meta: dict[str, Any], expected_count: int) -> Any:
    try:
        index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
    except (OSError, RuntimeError, ValueError) as exc:
        raise IndexFileError(f"{path} is not a faiss index this faiss can read: {exc}", path=path) from exc
    metric = faiss.METRIC_INNER_PRODUCT if meta["metric_type"] == "IP" else faiss.METRIC_L2
    if index.d != meta["dim"] or index.ntotal != expected_count or index.metric_type != metric:
        raise IndexFileError(
            f"{path} holds {index.ntotal} vectors of dimension {index.d} (metric {index.metric_type}), "
            f"{META_FILE} expects {expected_count} of dimension {meta['dim']} ({meta['metric_type']})",
            path=path,
        )
    expected_kind = {"Flat": faiss.IndexFlat, "HNSW32": faiss.IndexHNSWFlat, "IVF": faiss.IndexIVFFlat}
    kind = expected_kind[meta["index_type"]]
    if not isinstance(index, kind):
        raise IndexFileError(
            f"{path} is a {type(index).__name__}, expected {kind.__name__} for {meta['index_type']}",
            path=path,
        )
    return index


# --------------------------------------------------------------------------------------------------- gallery.txt


def read_gallery(
    path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    check_exists: bool = True,
) -> list[tuple[Path, str]]:
    """Read a PaddleX ``gallery.txt``: one ``<image path> <label>`` per line.

    The image path and the label are separated by a tab or, on lines without a tab, by the first space (so labels
    may contain spaces; image paths with spaces need the tab). Blank lines are skipped. Image paths are relative
    to ``image_root``, which defaults to the file's directory (PaddleX's ``gallery_imgs``).

    Args:
        path: the gallery file, UTF-8 (a BOM is accepted).
        image_root: directory the image paths are relative to.
        check_exists: raise when a listed image is not a file.

    Returns:
        ``(image path, label)`` pairs in file order.

    Raises:
        InvalidInputError: the file is unreadable or empty, or a line is malformed or names a missing image; the
            message gives ``file:line``.
    """
    gallery = Path(path)
    root = gallery.parent if image_root is None else Path(image_root)
    try:
        data = gallery.read_bytes()
    except FileNotFoundError as exc:
        raise InvalidInputError(f"gallery file {gallery} does not exist") from exc
    except OSError as exc:
        raise InvalidInputError(f"cannot read gallery file {gallery}: {exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInputError(f"{gallery}:{line}: not UTF-8 text ({exc.reason})") from exc

    pairs: list[tuple[Path, str]] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r").strip()
        if not line:
            continue
        if "\t" in line:
            fields = [field.strip() for field in line.split("\t")]
            if len(fields) != 2:
                raise InvalidInputError(
                    f"{gallery}:{number}: expected '<image path><tab><label>', got {len(fields)} tab-separated "
                    f"fields: {raw!r}"
                )
            image, label = fields
        else:
            image, _, label = line.partition(" ")
            label = label.strip()
        if not image or not label:
            raise InvalidInputError(
                f"{gallery}:{number}: expected '<image path><tab or space><label>', got {raw!r}"
            )
        image_path = root / image
        if check_exists and not image_path.is_file():
            raise InvalidInputError(f"{gallery}:{number}: image {image_path} does not exist")
        pairs.append((image_path, label))
    if not pairs:
        raise InvalidInputError(f"gallery file {gallery} lists no images")
    return pairs
