"""Tests of hpi/retrieval/index.py: the faiss feature index behind PP-ShiTuV2 retrieval."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

pytest.importorskip("faiss", reason="the feature index needs faiss-cpu (pip install 'hpi[retrieval]')")

from hpi.errors import HpiError, InvalidConfigError, InvalidInputError  # noqa: E402
from hpi.retrieval import vectors as vectors_module  # noqa: E402
from hpi.retrieval.index import FeatureIndex, Hit, UnknownIdError, ivf_nlist  # noqa: E402
from tests.retrieval.clusters import DIM, INDEX_TYPES, METRICS, PER_CLUSTER, brute_force, clustered  # noqa: E402


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_search_matchesbrute_force(data, index_type, metric):
    centres, points, labels = data
    index = FeatureIndex(points, labels, index_type=index_type, metric_type=metric)
    queries = np.vstack([centres, points[::37]])
    ids = np.arange(len(points))
    for query, hits in zip(queries, index.search(queries, k=10), strict=True):
        expected_ids, expected_scores = brute_force(points, ids, query, 10, metric)
        assert [hit.id for hit in hits] == expected_ids
        np.testing.assert_allclose([hit.score for hit in hits], expected_scores, rtol=1e-4, atol=1e-5)
        assert all(hit.label == labels[hit.id] for hit in hits)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_cluster_centres_find_their_cluster(data, index_type, metric):
    centres, points, labels = data
    index = FeatureIndex(points, labels, index_type=index_type, metric_type=metric)
    for cluster, hits in enumerate(index.search(centres, k=PER_CLUSTER)):
        assert {hit.label for hit in hits} == {f"class{cluster}"}
        scores = [hit.score for hit in hits]
        assert scores == sorted(scores, reverse=index.higher_is_better)


@pytest.mark.parametrize("metric", METRICS)
def test_scores_are_the_same_number_across_index_types(data, metric):
    centres, points, labels = data
    results = {
        index_type: FeatureIndex(points, labels, index_type=index_type, metric_type=metric).search(
            centres, k=5
        )
        for index_type in INDEX_TYPES
    }
    for index_type in INDEX_TYPES[1:]:
        for flat_hits, hits in zip(results["Flat"], results[index_type], strict=True):
            assert [hit.id for hit in hits] == [hit.id for hit in flat_hits]
            np.testing.assert_allclose(
                [h.score for h in hits], [h.score for h in flat_hits], rtol=1e-5, atol=1e-6
            )


def test_single_vector_query_and_hit_tuple(data):
    _, points, labels = data
    index = FeatureIndex(points, labels, index_type="Flat")
    [[hit]] = index.search(points[3], k=1)
    assert isinstance(hit, Hit)
    item_id, label, score = hit
    assert (item_id, label) == (3, labels[3])
    assert score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_append_gives_new_ids_that_search_finds(data, index_type, metric):
    _, points, labels = data
    index = FeatureIndex(points, labels, index_type=index_type, metric_type=metric)
    new_centres, new_points, _ = clustered(seed=1, clusters=1, per_cluster=10)
    new_ids = index.append(new_points, ["newcomer"] * 10)
    assert new_ids == list(range(len(points), len(points) + 10))
    assert len(index) == len(points) + 10
    assert all(index.id_map[i] == "newcomer" for i in new_ids)
    hits = index.search(new_centres[0], k=10)[0]
    assert sorted(hit.id for hit in hits) == new_ids


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_remove_drops_items_and_keeps_other_ids(data, index_type, metric):
    centres, points, labels = data
    index = FeatureIndex(points, labels, index_type=index_type, metric_type=metric)
    before = index.id_map
    cluster_ids = list(range(2 * PER_CLUSTER, 3 * PER_CLUSTER))  # class2
    assert index.remove(cluster_ids) == PER_CLUSTER
    assert len(index) == len(points) - PER_CLUSTER
    assert index.id_map == {i: label for i, label in before.items() if i not in set(cluster_ids)}
    live_ids = np.array(sorted(index.id_map))
    hits = index.search(centres[2], k=10)[0]
    assert all(hit.label != "class2" for hit in hits)
    expected_ids, _ = brute_force(points[live_ids], live_ids, centres[2], 10, metric)
    assert [hit.id for hit in hits] == expected_ids


def test_remove_unknown_ids_raises_and_removes_nothing(data):
    _, points, labels = data
    index = FeatureIndex(points, labels, index_type="Flat")
    index.remove([5])
    with pytest.raises(UnknownIdError) as excinfo:
        index.remove([1, 5, 99999])
    assert excinfo.value.ids == (5, 99999)
    assert "5, 99999" in str(excinfo.value)
    assert isinstance(excinfo.value, HpiError)
    assert 1 in index and len(index) == len(points) - 1
    assert index.remove([1, 5, 99999, 1], missing_ok=True) == 1
    assert 1 not in index


def test_ids_are_never_reused(data):
    _, points, labels = data
    index = FeatureIndex(points[:10], labels[:10], index_type="Flat")
    index.remove([8, 9])
    assert index.append(points[10:12], labels[10:12]) == [10, 11]
    index.rebuild()
    assert index.append(points[12:13], labels[12:13]) == [12]


@pytest.mark.parametrize("bad_ids", ["3", 3, [1.5], [None]])
def test_remove_rejects_non_integer_ids(data, bad_ids):
    _, points, labels = data
    index = FeatureIndex(points[:10], labels[:10], index_type="Flat")
    with pytest.raises(InvalidInputError):
        index.remove(bad_ids)


# --------------------------------------------------------------------------------------------- HNSW removal


@pytest.mark.parametrize("metric", METRICS)
def test_hnsw_removed_items_never_come_back_even_for_large_k(data, metric):
    _, points, labels = data
    index = FeatureIndex(points, labels, index_type="HNSW32", metric_type=metric, rebuild_ratio=1.0)
    removed = set(range(0, len(points), 3))
    index.remove(removed)
    assert len(index) == len(points) - len(removed)
    assert "tombstones=" + str(len(removed)) in repr(index)  # still in the graph, not rebuilt
    hits = index.search(points[0], k=10 * len(points))[0]
    assert {hit.id for hit in hits} == set(range(len(points))) - removed


@pytest.mark.parametrize("metric", METRICS)
def test_hnsw_all_neighbours_removed_still_finds_the_nearest_live_items(data, metric):
    centres, points, labels = data
    index = FeatureIndex(points, labels, index_type="HNSW32", metric_type=metric, rebuild_ratio=1.0)
    # Remove the query's whole cluster and most of the rest: the graph search alone runs out of live hits.
    removed = [i for i in range(len(points)) if labels[i] == "class0" or i % 10]
    index.remove(removed)
    live_ids = np.array(sorted(index.id_map))
    for query in (centres[0], points[0]):
        hits = index.search(query, k=12)[0]
        expected_ids, expected_scores = brute_force(points[live_ids], live_ids, query, 12, metric)
        assert [hit.id for hit in hits] == expected_ids
        np.testing.assert_allclose([hit.score for hit in hits], expected_scores, rtol=1e-4, atol=1e-5)


def test_hnsw_graph_search_short_of_live_hits_falls_back_to_an_exact_scan(data, monkeypatch):
    _, points, labels = data
    # A shallow search through a graph that is 95% tombstones cannot collect k live hits by itself.
    index = FeatureIndex(points, labels, index_type="HNSW32", ef_search=1, rebuild_ratio=1.0)
    index.remove([i for i in range(len(points)) if i % 20])
    scans = []
    real_exact_search = vectors_module.VectorStore.exact_search

    def counting_exact_search(self, *args, **kwargs):
        scans.append(args)
        return real_exact_search(self, *args, **kwargs)

    monkeypatch.setattr(vectors_module.VectorStore, "exact_search", counting_exact_search)
    live_ids = np.array(sorted(index.id_map))
    for query in points[:8]:
        hits = index.search(query, k=10)[0]
        assert [hit.id for hit in hits] == brute_force(points[live_ids], live_ids, query, 10, "IP")[0]
    assert scans  # the fallback did run


def test_hnsw_rebuild_threshold_drops_tombstones_and_keeps_ids(data):
    centres, points, labels = data
    index = FeatureIndex(points, labels, index_type="HNSW32", rebuild_ratio=0.1)
    index.remove([1])  # 1 of 320 graph nodes: below the threshold, stays a tombstone
    assert "tombstones=1" in repr(index)
    index.remove(list(range(280, 320)))  # 41 of 320 > 10%: rebuilt from the kept vectors
    assert "tombstones=0" in repr(index)
    live_ids = np.array(sorted(index.id_map))
    assert len(live_ids) == len(points) - 41
    for query, hits in zip(centres, index.search(centres, k=5), strict=True):
        expected_ids, _ = brute_force(points[live_ids], live_ids, query, 5, "IP")
        assert [hit.id for hit in hits] == expected_ids


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_removing_everything_leaves_a_searchable_index(data, index_type):
    _, points, labels = data
    index = FeatureIndex(points[:50], labels[:50], index_type=index_type)
    assert index.remove(range(50)) == 50
    assert len(index) == 0
    assert index.search(points[:2], k=3) == [[], []]
    new_ids = index.append(points[50:52], labels[50:52])
    assert new_ids == [50, 51]
    assert [hit.id for hit in index.search(points[50], k=5)[0]] == [50, 51]


# --------------------------------------------------------------------------------------------- IVF sizing


@pytest.mark.parametrize("count", [1, 2, 7, 38, 39, 100])
def test_ivf_builds_for_small_galleries(data, count):
    _, points, labels = data
    index = FeatureIndex(points[:count], labels[:count], index_type="IVF")
    hits = index.search(points[0], k=count + 5)[0]
    assert sorted(hit.id for hit in hits) == list(range(count))


def test_ivf_nlist_grows_with_the_gallery():
    assert ivf_nlist(0) == 1 and ivf_nlist(38) == 1 and ivf_nlist(78) == 2
    assert ivf_nlist(10_000) == 256 and ivf_nlist(100_000) == 1264 and ivf_nlist(10**9) == 65536


def test_ivf_retrains_when_the_gallery_grows(data, tmp_path):
    _, points, labels = data
    index = FeatureIndex(points[:40], labels[:40], index_type="IVF")
    index.append(points[40:], labels[40:])  # 320 >= 4 x 40: retrained with more lists
    index.save(tmp_path / "ivf")
    meta = json.loads((tmp_path / "ivf" / "meta.json").read_text())
    assert (meta["nlist"], meta["trained_count"]) == (ivf_nlist(len(points)), len(points))
    assert [hit.id for hit in index.search(points[300], k=1)[0]] == [300]


def test_search_depth_can_be_tuned_without_rebuilding(data):
    centres, points, labels = data
    hnsw = FeatureIndex(points, labels, index_type="HNSW32", ef_search=8)
    hnsw.ef_search = 128
    assert hnsw.ef_search == 128 and hnsw.nprobe == 0
    ivf = FeatureIndex(points, labels, index_type="IVF", nprobe=1)
    assert ivf.nprobe == 1
    ivf.nprobe = None
    assert ivf.nprobe == 8  # 8 lists for 320 vectors: all visited by default
    assert ivf.search(centres, k=5) == FeatureIndex(points, labels, index_type="Flat").search(centres, k=5)
    with pytest.raises(InvalidConfigError, match="ef_search must be a positive integer"):
        hnsw.ef_search = 0


# --------------------------------------------------------------------------------------------- validation


def test_empty_index_can_be_built_searched_and_grown():
    index = FeatureIndex(np.empty((0, 4), np.float32), [], index_type="IVF")
    assert len(index) == 0 and index.dim == 4
    assert index.search(np.ones(4), k=2) == [[]]
    assert index.append(np.eye(4, dtype=np.float32), list("abcd")) == [0, 1, 2, 3]
    assert index.search(np.eye(4)[2], k=1)[0][0].label == "c"


def test_bad_inputs_raise_clear_errors(data):
    _, points, labels = data
    with pytest.raises(InvalidConfigError, match="available: HNSW32, IVF, Flat"):
        FeatureIndex(points, labels, index_type="IVF_PQ")
    with pytest.raises(InvalidConfigError, match="available: IP, L2"):
        FeatureIndex(points, labels, metric_type="cosine")
    with pytest.raises(InvalidInputError, match="got 3 labels for 320"):
        FeatureIndex(points, labels[:3])
    with pytest.raises(InvalidInputError, match="label 0 must be a non-empty string"):
        FeatureIndex(points[:1], [7])
    with pytest.raises(InvalidInputError, match="shape"):
        FeatureIndex(points[0], labels[:1])
    index = FeatureIndex(points, labels, index_type="Flat")
    with pytest.raises(InvalidInputError, match="dimension 16, the index has dimension 32"):
        index.search(np.zeros((1, 16)), k=1)
    with pytest.raises(InvalidInputError, match="row 1 contains NaN"):
        index.append(np.vstack([points[:1], np.full((1, DIM), np.nan)]), ["a", "b"])
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        index.search(points[0], k=0)
    assert len(index) == len(points)



# --------------------------------------------------------------------------------------------- threads


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_concurrent_append_remove_and_search_lose_nothing(data, index_type):
    _, points, labels = data
    index = FeatureIndex(points[:40], labels[:40], index_type=index_type, rebuild_ratio=0.05)
    kept: dict[int, str] = dict(index.id_map)
    removed: set[int] = set()
    bookkeeping = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def writer(worker: int) -> None:
        try:
            rng = np.random.default_rng(worker)
            start.wait()
            for batch in range(25):
                rows = rng.integers(0, len(points), size=3)
                names = [f"w{worker}-b{batch}-{n}" for n in range(3)]
                ids = index.append(points[rows], names)
                assert index.remove([ids[0]]) == 1
                with bookkeeping:
                    kept.update(zip(ids[1:], names[1:], strict=True))
                    removed.add(ids[0])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def searcher() -> None:
        try:
            start.wait()
            for _ in range(50):
                for hits in index.search(points[:4], k=8):
                    assert len(hits) == 8 and len({hit.id for hit in hits}) == 8
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=searcher))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(removed) == 100
    assert index.id_map == kept and len(index) == 40 + 4 * 25 * 2
    everything = index.search(points[0], k=10_000)[0]
    assert {hit.id for hit in everything} == set(kept)


def test_saving_while_other_threads_append_writes_a_consistent_index(data, tmp_path):
    _, points, labels = data
    index = FeatureIndex(points[:40], labels[:40], index_type="HNSW32")
    done = threading.Event()

    def appender() -> None:
        for n in range(200):
            index.append(points[n % len(points)][None], [f"extra{n}"])
        done.set()

    thread = threading.Thread(target=appender)
    thread.start()
    sizes = []
    while not done.is_set():
        index.save(tmp_path / "idx")
        sizes.append(len(FeatureIndex.load(tmp_path / "idx")))
    thread.join()
    index.save(tmp_path / "idx")
    assert FeatureIndex.load(tmp_path / "idx").id_map == index.id_map
    assert sizes == sorted(sizes)
