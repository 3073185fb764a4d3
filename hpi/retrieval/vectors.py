"""The raw vectors behind a feature index: rows of (id, vector, live flag) that faiss indexes are (re)built from."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class VectorStore:
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
