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

The raw vectors live in :class:`~hpi.retrieval.vectors.VectorStore`; saving and loading, with their checksums
and crash recovery, in :mod:`hpi.retrieval.storage`.

>>> import numpy as np
>>> feats = np.eye(4, dtype=np.float32)
>>> index = FeatureIndex(feats, ["a", "b", "c", "d"], index_type="Flat", metric_type="IP")
>>> index.search(feats[1], k=1)
[[Hit(id=1, label='b', score=1.0)]]
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from hpi.errors import BackendUnavailableError, HpiInternalError, InvalidConfigError, InvalidInputError
from hpi.retrieval.storage import (
    FAISS_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_TYPES,
    METRIC_TYPES,
    IndexSnapshot,
    opened_index,
    read_faiss,
    save_index,
)
from hpi.retrieval.validation import as_ids, as_labels, as_matrix, is_int
from hpi.retrieval.vectors import VectorStore

logger = logging.getLogger(__name__)

IndexType = Literal["HNSW32", "IVF", "Flat"]
MetricType = Literal["IP", "L2"]

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
        vectors = as_matrix(features, dim=None, what="features")
        label_list = as_labels(labels, len(vectors))
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
            if value is not None and (not is_int(value) or value < 1):
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
        self._store = VectorStore(dim)
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
        if not is_int(value) or value < 1:
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
        if value is not None and (not is_int(value) or value < 1):
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
        vectors = as_matrix(features, dim=self._dim, what="features")
        label_list = as_labels(labels, len(vectors))
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
        wanted = as_ids(ids)
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
        if not is_int(k) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        matrix = as_matrix(queries, dim=self._dim, what="queries", allow_vector=True)
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
        that fails or is killed half-way leaves the previous index at ``directory`` loadable
        (:mod:`hpi.retrieval.storage`).

        Args:
            directory: target directory; created with its parents. An existing directory that is not an index
                is never replaced.

        Returns:
            The absolute path of the saved index.
        """
        return save_index(self._snapshot(), directory)

    def _snapshot(self) -> IndexSnapshot:
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
            return IndexSnapshot(meta, faiss_bytes, ids, vectors, id_map)

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
        with opened_index(directory) as saved:
            meta = saved.meta
            index = cls.__new__(cls)
            index._setup(
                meta["dim"],
                meta["index_type"],
                meta["metric_type"],
                meta["ef_search"] if ef_search is None else ef_search,
                meta["nprobe"] if nprobe is None else nprobe,
                meta["rebuild_ratio"],
            )
            id_list = saved.ids.tolist()
            tombstones = meta["tombstones"]
            index._store.add(saved.ids, saved.vectors)
            index._labels = {item_id: saved.id_map[item_id] for item_id in id_list}
            index._next_id = meta["next_id"]
            index._tombstones = set(tombstones)
            index._nlist = meta["nlist"]
            index._trained_count = meta["trained_count"]
            held = len(id_list) + len(tombstones)
            if held > 0:
                index._index = read_faiss(index._faiss, saved.directory / FAISS_FILE, meta, held)
            if index._index_type != "IVF":
                index._position_ids = np.array(sorted([*id_list, *tombstones]), dtype=np.int64)
            index._refresh_search_params()
            return index
