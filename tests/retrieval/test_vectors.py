"""hpi/retrieval/vectors.py: the raw rows behind a feature index: adding, removing, compacting, and the exact
search, checked against faiss's flat indexes (the scores the store promises to match) and a numpy reference."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from hpi.retrieval.vectors import VectorStore


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _ids(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int64) * 10  # not row numbers


def test_an_empty_store():
    store = VectorStore(4)
    ids, vectors = store.live()
    assert len(store) == 0 and ids.shape == (0,) and vectors.shape == (0, 4)


def test_rows_added_in_many_small_steps_all_stay_in_order():
    store, all_vectors = VectorStore(8), []
    for step in range(300):  # 2100 rows: past the first buffer (1024 rows), so the buffers grow twice
        vectors = _vectors(7, seed=step)
        store.add(_ids(7 * step, 7), vectors)
        all_vectors.append(vectors)
    ids, vectors = store.live()
    assert len(store) == 2100
    np.testing.assert_array_equal(ids, _ids(0, 2100))
    np.testing.assert_array_equal(vectors, np.concatenate(all_vectors))
    assert vectors.dtype == np.float32 and ids.dtype == np.int64


def test_live_returns_copies():
    store = VectorStore(8)
    store.add(_ids(0, 3), _vectors(3))
    ids, vectors = store.live()
    vectors[:] = 0
    ids[:] = -1
    np.testing.assert_array_equal(store.live()[1], _vectors(3))
    np.testing.assert_array_equal(store.live()[0], _ids(0, 3))


def test_killed_rows_leave_live_and_search_until_compacted_away():
    store = VectorStore(8)
    store.add(_ids(0, 6), _vectors(6))
    store.kill([10, 40])
    assert len(store) == 4
    ids, vectors = store.live()
    np.testing.assert_array_equal(ids, [0, 20, 30, 50])
    np.testing.assert_array_equal(vectors, _vectors(6)[[0, 2, 3, 5]])
    found, _ = store.exact_search(_vectors(6)[1], 6, "L2")  # the query is the killed row 10 itself
    assert sorted(found.tolist()) == [0, 20, 30, 50]

    store.compact()
    np.testing.assert_array_equal(store.live()[0], [0, 20, 30, 50])
    store.kill([30])  # ids map to their new rows after compaction
    np.testing.assert_array_equal(store.live()[0], [0, 20, 50])
    np.testing.assert_array_equal(store.live()[1], _vectors(6)[[0, 2, 5]])
    store.add(_ids(7, 2), _vectors(2, seed=9))  # and adding after compaction appends
    np.testing.assert_array_equal(store.live()[0], [0, 20, 50, 70, 80])
    np.testing.assert_array_equal(store.live()[1][-2:], _vectors(2, seed=9))


def test_killing_an_unknown_or_dead_id_raises():
    store = VectorStore(8)
    store.add(_ids(0, 2), _vectors(2))
    store.kill([0])
    with pytest.raises(KeyError):
        store.kill([0])
    with pytest.raises(KeyError):
        store.kill([999])


def test_compacting_a_store_without_dead_rows_changes_nothing():
    store = VectorStore(8)
    store.add(_ids(0, 5), _vectors(5))
    store.compact()
    np.testing.assert_array_equal(store.live()[0], _ids(0, 5))


def _faiss(metric: str, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    flat = faiss.IndexFlatIP(vectors.shape[1]) if metric == "IP" else faiss.IndexFlatL2(vectors.shape[1])
    index = faiss.IndexIDMap(flat)
    index.add_with_ids(vectors, ids)
    return index


@pytest.mark.parametrize("metric", ["IP", "L2"])
@pytest.mark.parametrize("k", [1, 5, 37])
def test_exact_search_scores_as_faiss_does(metric, k):
    vectors = _vectors(200, dim=16, seed=1)
    store = VectorStore(16)
    store.add(_ids(0, 200), vectors)
    dead = _ids(0, 200)[::3]
    store.kill(dead.tolist())
    live_ids, live_vectors = store.live()
    index = _faiss(metric, live_vectors, live_ids)
    for query in _vectors(10, dim=16, seed=2):
        ids, scores = store.exact_search(query, k, metric)
        ref_scores, ref_ids = index.search(query[None], k)
        assert len(ids) == k and not set(ids.tolist()) & set(dead.tolist())
        np.testing.assert_allclose(scores, ref_scores[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(ids, ref_ids[0])


@pytest.mark.parametrize("metric", ["IP", "L2"])
def test_exact_search_orders_ties_by_id_and_never_returns_more_than_is_live(metric):
    store = VectorStore(2)
    same = np.array([[1.0, 0.0]] * 4, np.float32)
    store.add(np.array([40, 10, 30, 20]), same)
    store.add(np.array([50]), np.array([[0.0, 1.0]], np.float32))
    store.kill([30])
    ids, scores = store.exact_search(np.array([1.0, 0.0], np.float32), 10, metric)
    assert ids.tolist() == [10, 20, 40, 50]  # three equal scores: by id; then the worse one; the dead row never
    expected = [1.0, 1.0, 1.0, 0.0] if metric == "IP" else [0.0, 0.0, 0.0, 2.0]
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_l2_distances_are_never_negative():
    """The expanded form |v|^2 - 2 v.q + |q|^2 can round below zero for a query equal to a stored vector."""
    vectors = (_vectors(50, dim=64, seed=3) * 1000).astype(np.float32)
    store = VectorStore(64)
    store.add(_ids(0, 50), vectors)
    for row in range(50):
        ids, scores = store.exact_search(vectors[row], 3, "L2")
        assert ids[0] == _ids(0, 50)[row] and scores.min() >= 0.0
