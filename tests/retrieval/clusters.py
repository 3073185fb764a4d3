"""Clustered unit vectors shared by the retrieval tests."""

from __future__ import annotations

import numpy as np

INDEX_TYPES = ["Flat", "IVF", "HNSW32"]
METRICS = ["IP", "L2"]
DIM = 32
CLUSTERS = 8
PER_CLUSTER = 40


def normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(seed: int = 0, clusters: int = CLUSTERS, per_cluster: int = PER_CLUSTER):
    """Unit vectors in tight clusters around random centres: cluster c has label f"class{c}"."""
    rng = np.random.default_rng(seed)
    centres = normalised(rng.standard_normal((clusters, DIM)))
    points = centres.repeat(per_cluster, axis=0) + 0.05 * rng.standard_normal((clusters * per_cluster, DIM))
    labels = [f"class{c}" for c in range(clusters) for _ in range(per_cluster)]
    return centres, normalised(points), labels


def brute_force(gallery: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int, metric: str):
    """Exact top-k (ids, scores) as the index should report them."""
    if metric == "IP":
        scores = gallery @ query
        order = np.lexsort((ids, -scores))
    else:
        scores = ((gallery - query) ** 2).sum(axis=1)
        order = np.lexsort((ids, scores))
    return ids[order[:k]].tolist(), scores[order[:k]]
