"""hpi/storage.py: the one locked, atomic, manifest-checked directory writer and its reader.

Two processes writing one directory at once are tested through the engine cache (tests/test_cache.py).
"""

from __future__ import annotations

import os

import pytest

from hpi import storage
from hpi.errors import StorageError


def _fill(payload: bytes, **fields):
    def fill(staging):
        (staging / "sub").mkdir()
        (staging / "a.bin").write_bytes(payload)
        (staging / "sub" / "b.txt").write_text("b")
        return fields

    return fill


def test_write_then_verify_returns_the_manifest(tmp_path):
    target = storage.write_directory(tmp_path / "entry", _fill(b"x" * 10, kind="demo"))
    manifest = storage.verify_directory(target)
    assert manifest["kind"] == "demo"
    assert manifest["files"] == {
        "a.bin": {"size": 10, "sha256": storage.file_sha256(target / "a.bin")},
        "sub/b.txt": {"size": 1, "sha256": storage.file_sha256(target / "sub" / "b.txt")},
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [".entry.lock", "entry"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "no_manifest", "garbage_manifest"])
def test_a_damaged_directory_never_verifies(tmp_path, damage):
    target = storage.write_directory(tmp_path / "entry", _fill(b"0123456789" * 10))
    assert storage.is_complete(target)  # remembered as verified: damage below must still be seen
    blob = target / "a.bin"
    if damage == "truncate":
        blob.write_bytes(blob.read_bytes()[:50])
    elif damage == "flip":
        blob.write_bytes(b"X" + blob.read_bytes()[1:])
    elif damage == "delete":
        blob.unlink()
    elif damage == "no_manifest":
        (target / storage.MANIFEST).unlink()
    else:
        (target / storage.MANIFEST).write_text("{not json")
    with pytest.raises(StorageError) as excinfo:
        storage.verify_directory(target)
    named = target / storage.MANIFEST if "manifest" in damage else blob
    assert excinfo.value.path == named and named.name in str(excinfo.value)
    assert not storage.is_complete(target)


def test_failed_fill_leaves_the_old_directory_and_nothing_else(tmp_path):
    target = storage.write_directory(tmp_path / "entry", _fill(b"old"))

    def explode(staging):
        (staging / "a.bin").write_bytes(b"half")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="converter crashed"):
        storage.write_directory(target, explode)
    assert (target / "a.bin").read_bytes() == b"old" and storage.is_complete(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".entry.lock", "entry"]


def test_keep_existing_decides_under_the_lock(tmp_path):
    target = storage.write_directory(tmp_path / "entry", _fill(b"first"))
    seen = []

    def keep(existing):
        seen.append(existing)
        return True

    assert storage.write_directory(target, _fill(b"second"), keep_existing=keep) == target
    assert seen == [target] and (target / "a.bin").read_bytes() == b"first"
    storage.write_directory(target, _fill(b"third"), keep_existing=lambda existing: False)
    assert (target / "a.bin").read_bytes() == b"third"


def test_the_manifest_is_written_by_the_writer_only(tmp_path):
    def fill(staging):
        (staging / storage.MANIFEST).write_text("{}")

    with pytest.raises(StorageError, match="manifest is written last"):
        storage.write_directory(tmp_path / "entry", fill)
    assert not (tmp_path / "entry").exists()


def test_a_crash_between_the_two_renames_is_undone(tmp_path, monkeypatch):
    target = storage.write_directory(tmp_path / "entry", _fill(b"old"))
    real_rename, calls = os.rename, []

    def rename_once_then_crash(src, dst):
        calls.append(dst)
        if len(calls) > 1:
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(storage.os, "rename", rename_once_then_crash)
    with pytest.raises(StorageError, match="Input/output error"):
        storage.write_directory(target, _fill(b"new"))
    monkeypatch.undo()
    assert not target.exists() and storage.readable_path(target) == tmp_path / ".entry.previous"
    with storage.directory_lock(target):
        storage.recover(target)
    assert (target / "a.bin").read_bytes() == b"old" and not (tmp_path / ".entry.previous").exists()


def test_stale_staging_directories_are_removed_by_the_next_writer(tmp_path):
    stale = tmp_path / ".entry.tmp-0123456789abcdef"
    stale.mkdir()
    (stale / "a.bin").write_bytes(b"partial")
    storage.write_directory(tmp_path / "entry", _fill(b"x"))
    assert not stale.exists()


def test_write_file_atomic_replaces_a_file_under_its_lock(tmp_path):
    path = tmp_path / "deep" / "config.yaml"
    assert storage.write_file_atomic(path, b"one") == path
    storage.write_file_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == [".config.yaml.lock", "config.yaml"]


def test_unwritable_parent_is_a_storage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot create"):
        storage.write_directory(blocker / "entry", _fill(b"x"))
    with pytest.raises(StorageError, match="cannot create"):
        storage.write_file_atomic(blocker / "x.yaml", b"x")


def test_read_only_files_are_sealed(tmp_path):
    def fill(staging):
        (staging / "weights.bin").write_bytes(b"w")
        (staging / "weights.bin").chmod(0o444)  # as copied from a read-only source

    target = storage.write_directory(tmp_path / "entry", fill)
    assert storage.verify_directory(target)["files"]["weights.bin"]["size"] == 1
