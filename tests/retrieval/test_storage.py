"""Tests of hpi/retrieval/storage.py: saving and loading an index, crash safety, corruption named by file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("faiss", reason="the feature index needs faiss-cpu (pip install 'hpi[retrieval]')")

from hpi.retrieval import storage as storage_module  # noqa: E402
from hpi.retrieval.index import FeatureIndex  # noqa: E402
from hpi.retrieval.storage import IndexFileError  # noqa: E402
from hpi.storage import file_sha256  # noqa: E402
from tests.retrieval.clusters import DIM, INDEX_TYPES, METRICS  # noqa: E402

# --------------------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_save_load_round_trip(data, tmp_path, index_type, metric):
    centres, points, labels = data
    index = FeatureIndex(points, labels, index_type=index_type, metric_type=metric)
    index.remove([0, 1, 100])
    saved = index.save(tmp_path / "gallery_index")
    assert sorted(os.listdir(saved)) == ["id_map.json", "ids.npy", "index.faiss", "meta.json", "vectors.npy"]
    loaded = FeatureIndex.load(tmp_path / "gallery_index")
    assert (loaded.index_type, loaded.metric_type, loaded.dim) == (index_type, metric, DIM)
    assert loaded.id_map == index.id_map and len(loaded) == len(index)
    assert loaded.search(centres, k=7) == index.search(centres, k=7)
    assert loaded.append(points[:1], ["again"]) == [len(points)]  # next id survives
    assert {hit.id for hit in loaded.search(points[0], k=len(points))[0]}.isdisjoint({0, 1, 100})


def test_save_replaces_the_previous_index_and_leaves_no_temporaries(data, tmp_path):
    _, points, labels = data
    FeatureIndex(points[:10], labels[:10], index_type="Flat").save(tmp_path / "idx")
    FeatureIndex(points[:20], labels[:20], index_type="HNSW32").save(tmp_path / "idx")
    assert len(FeatureIndex.load(tmp_path / "idx")) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock", "idx"]


def test_save_refuses_to_replace_a_directory_that_is_not_an_index(data, tmp_path):
    _, points, labels = data
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"jpeg")
    with pytest.raises(IndexFileError, match="not a saved index"):
        FeatureIndex(points[:5], labels[:5], index_type="Flat").save(tmp_path / "photos")
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"jpeg"


def test_interrupted_save_leaves_the_previous_index_loadable(data, tmp_path, monkeypatch):
    centres, points, labels = data
    old = FeatureIndex(points[:100], labels[:100], index_type="HNSW32")
    old.save(tmp_path / "idx")
    new = FeatureIndex(points, labels, index_type="HNSW32")

    real_write_file = storage_module.write_file
    written = []

    def write_two_files_then_fail(path, write):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(path.name)
        return real_write_file(path, write)

    monkeypatch.setattr(storage_module, "write_file", write_two_files_then_fail)
    with pytest.raises(IndexFileError, match="No space left on device"):
        new.save(tmp_path / "idx")
    monkeypatch.undo()

    assert len(written) == 2
    loaded = FeatureIndex.load(tmp_path / "idx")
    assert loaded.id_map == old.id_map
    assert loaded.search(centres, k=3) == old.search(centres, k=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock", "idx"]


def test_save_killed_before_cleanup_leaves_the_previous_index_loadable(data, tmp_path):
    _, points, labels = data
    FeatureIndex(points[:10], labels[:10], index_type="Flat").save(tmp_path / "idx")
    # What a process killed mid-write leaves: a half-written staging directory beside the index.
    stale = tmp_path / ".idx.tmp-0123456789abcdef"
    stale.mkdir()
    (stale / "vectors.npy").write_bytes(b"\x93NUMPY partial")
    assert len(FeatureIndex.load(tmp_path / "idx")) == 10
    FeatureIndex(points[:20], labels[:20], index_type="Flat").save(tmp_path / "idx")
    assert not stale.exists()
    assert len(FeatureIndex.load(tmp_path / "idx")) == 20


def test_crash_between_the_two_renames_is_recovered(data, tmp_path, monkeypatch):
    _, points, labels = data
    FeatureIndex(points[:10], labels[:10], index_type="Flat").save(tmp_path / "idx")
    real_rename = os.rename
    calls = []

    def rename_once_then_crash(src, dst):
        calls.append((src, dst))
        if len(calls) > 1:
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(storage_module.os, "rename", rename_once_then_crash)
    with pytest.raises(IndexFileError):
        FeatureIndex(points[:20], labels[:20], index_type="Flat").save(tmp_path / "idx")
    monkeypatch.undo()

    assert not (tmp_path / "idx").exists() and (tmp_path / ".idx.previous").is_dir()
    assert len(FeatureIndex.load(tmp_path / "idx")) == 10  # the old index is put back
    assert (tmp_path / "idx").is_dir() and not (tmp_path / ".idx.previous").exists()


def _saved(tmp_path: Path, data, index_type: str = "HNSW32") -> Path:
    _, points, labels = data
    return FeatureIndex(points, labels, index_type=index_type).save(tmp_path / "idx")


@pytest.mark.parametrize("name", ["index.faiss", "vectors.npy", "ids.npy", "id_map.json"])
def test_truncated_file_is_named_in_the_error(data, tmp_path, name):
    path = _saved(tmp_path, data) / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(IndexFileError, match=f"{name} is .* bytes.*truncated") as excinfo:
        FeatureIndex.load(tmp_path / "idx")
    assert excinfo.value.path == path


@pytest.mark.parametrize("name", ["index.faiss", "vectors.npy"])
def test_flipped_byte_is_named_in_the_error(data, tmp_path, name):
    path = _saved(tmp_path, data) / name
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(IndexFileError, match=f"{name} fails its SHA-256 check"):
        FeatureIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("name", ["index.faiss", "id_map.json", "meta.json"])
def test_missing_file_is_named_in_the_error(data, tmp_path, name):
    (_saved(tmp_path, data) / name).unlink()
    with pytest.raises(IndexFileError, match=f"{name} is missing"):
        FeatureIndex.load(tmp_path / "idx")


def test_garbage_faiss_file_with_matching_checksum_is_a_clear_error_not_a_crash(data, tmp_path):
    directory = _saved(tmp_path, data)
    faiss_file = directory / "index.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:5000])
    meta = json.loads((directory / "meta.json").read_text())
    meta["files"]["index.faiss"] = {
        "size": 5000,
        "sha256": file_sha256(faiss_file),
    }
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match="index.faiss is not a faiss index this faiss can read"):
        FeatureIndex.load(directory)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda meta: meta.update(version=99), "format version 99"),
        (lambda meta: meta.update(format="paddlex"), "not an hpi feature index"),
        (lambda meta: meta.pop("dim"), "field 'dim'"),
        (lambda meta: meta.update(count=5), "ids.npy holds"),
        (lambda meta: meta.update(metric_type="L2"), "index.faiss holds"),
        (lambda meta: meta.update(rebuild_ratio=0), "out of range"),
    ],
)
def test_inconsistent_meta_is_a_clear_error(data, tmp_path, edit, message):
    directory = _saved(tmp_path, data)
    meta = json.loads((directory / "meta.json").read_text())
    edit(meta)
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match=message):
        FeatureIndex.load(directory)


def test_corrupted_meta_json_is_named(data, tmp_path):
    directory = _saved(tmp_path, data)
    (directory / "meta.json").write_text('{"format": "hpi-feature-index", "vers')
    with pytest.raises(IndexFileError, match="meta.json is unreadable or not valid JSON"):
        FeatureIndex.load(directory)


def test_loading_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(IndexFileError, match="no saved index"):
        FeatureIndex.load(tmp_path / "nowhere")
    with pytest.raises(IndexFileError, match="no saved index"):
        FeatureIndex.load(tmp_path / "nowhere" / "deeper")
    assert not (tmp_path / "nowhere").exists()
