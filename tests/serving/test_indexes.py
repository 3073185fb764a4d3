"""Index quotas: the number of indexes, vectors per index and bytes on disk; refused and failed changes leave the
disk (and the served index) as they were."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hpi.errors import InvalidConfigError
from hpi.retrieval import FeatureIndex, IndexFileError
from hpi.serving.indexes import IndexQuotas, IndexStore, QuotaExceededError, saved_size

pytestmark = pytest.mark.serving

DIM = 16


def features(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def index_of(count: int, seed: int = 0) -> FeatureIndex:
    return FeatureIndex(features(count, seed), [f"item-{i}" for i in range(count)], index_type="Flat")


def disk_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time: what 'the disk as before' means."""
    state = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            stat = path.lstat()
            state[str(path.relative_to(root))] = (stat.st_size if path.is_file() else 0, stat.st_mtime_ns)
    return state


def test_quotas_are_validated():
    with pytest.raises(InvalidConfigError, match="max_indexes"):
        IndexQuotas(max_indexes=0)
    with pytest.raises(InvalidConfigError, match="max_index_bytes"):
        IndexQuotas(max_index_bytes=-1)


def test_the_number_of_indexes_is_capped_and_a_refusal_writes_nothing(tmp_path):
    store = IndexStore(tmp_path, quotas=IndexQuotas(max_indexes=2))
    keys = [store.create(index_of(3, seed)) for seed in range(2)]
    assert sorted(keys) == store.keys()
    before = disk_state(tmp_path)
    with pytest.raises(QuotaExceededError, match="quota max_indexes: .* 2 indexes .* the limit is 2") as info:
        store.create(index_of(3, 9))
    assert info.value.limit == "max_indexes" and info.value.status_code == 403
    with pytest.raises(QuotaExceededError, match="max_indexes"):
        store.check_new_index(1)  # what the endpoint asks before embedding anything
    assert disk_state(tmp_path) == before


def test_vectors_per_index_are_capped_on_build_and_on_add(tmp_path):
    store = IndexStore(tmp_path, quotas=IndexQuotas(max_vectors_per_index=5))
    with pytest.raises(QuotaExceededError, match="max_vectors_per_index: the new index would hold 6 vectors"):
        store.check_new_index(6)
    with pytest.raises(QuotaExceededError, match="max_vectors_per_index"):
        store.create(index_of(6))
    assert disk_state(tmp_path) == {}
    key = store.create(index_of(4))
    before = disk_state(tmp_path)
    with pytest.raises(QuotaExceededError, match=f"index '{key}' would hold 6 vectors, the limit is 5"):
        store.check_growth(key, 2)
    with pytest.raises(QuotaExceededError, match="max_vectors_per_index"):
        store.append(key, features(2, 7), ["a", "b"])
    assert disk_state(tmp_path) == before
    assert len(store.get(key)) == 4  # the served index is unchanged too
    assert store.append(key, features(1, 7), ["a"])[4] == "a"


def test_bytes_on_disk_are_capped_by_measuring_before_saving(tmp_path):
    one = saved_size(index_of(20))
    store = IndexStore(tmp_path / "indexes", quotas=IndexQuotas(max_index_bytes=int(one * 2.5)))
    first = store.create(index_of(20, 1))
    store.create(index_of(20, 2))
    before = disk_state(tmp_path)
    with pytest.raises(QuotaExceededError, match="quota max_index_bytes: .* MiB on disk, the limit is") as info:
        store.create(index_of(20, 3))
    assert info.value.limit == "max_index_bytes"
    assert disk_state(tmp_path) == before
    with pytest.raises(QuotaExceededError, match="max_index_bytes"):
        store.append(first, features(40, 5), [f"more-{i}" for i in range(40)])
    assert disk_state(tmp_path) == before
    assert len(store.get(first)) == 20  # the refused add is not served either
    assert store.disk_bytes() <= int(one * 2.5)


def test_a_build_that_fails_while_saving_leaves_the_disk_as_before(tmp_path, monkeypatch):
    store = IndexStore(tmp_path)
    store.create(index_of(3))
    before = disk_state(tmp_path)
    real_save = FeatureIndex.save

    def failing_save(self, directory):
        target = Path(directory)
        if target.parent == tmp_path:  # the real save under root: write part of it, then fail like a full disk
            target.mkdir()
            (target / "vectors.npy").write_bytes(b"\x93NUMPY" + b"\0" * 100)
            (target.parent / f".{target.name}.tmp-partial").mkdir()
            raise IndexFileError(f"cannot save the index to {target}: No space left on device", path=target)
        return real_save(self, directory)  # the measuring save in a temporary directory

    monkeypatch.setattr(FeatureIndex, "save", failing_save)
    with pytest.raises(IndexFileError, match="No space left"):
        store.create(index_of(4, 1))
    assert disk_state(tmp_path) == before
    assert len(store.keys()) == 1


def test_a_damaged_index_is_named_without_the_server_path(tmp_path, caplog):
    from hpi.serving.limits import status_for

    store = IndexStore(tmp_path / "store")
    key = store.create(index_of(3))
    saved = next(p for p in (tmp_path / "store" / key).iterdir() if p.suffix == ".npy" or p.suffix == ".faiss")
    data = bytearray(saved.read_bytes())
    data[-1] ^= 0xFF
    saved.write_bytes(bytes(data))
    fresh = IndexStore(tmp_path / "store")  # another process: nothing cached
    with pytest.raises(IndexFileError) as info:
        fresh.get(key)
    message = str(info.value)
    assert message.startswith(f"index {key} is damaged: {key}/{saved.name}") and str(tmp_path) not in message
    assert status_for(info.value) == 500
    assert str(saved) in caplog.text  # the operator's log has the full path
