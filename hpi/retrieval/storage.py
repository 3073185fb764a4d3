"""Saving and loading a feature index: its files, their format checks and checksums, through hpi.storage.

A saved index is a directory ``index.faiss`` (absent while the index is empty), ``vectors.npy``, ``ids.npy``,
``id_map.json`` and, written last, ``meta.json``: the format name and version, index type, metric, dimension,
counts and search settings, plus the size and SHA-256 of every file. It is written by
:func:`hpi.storage.write_directory` (temporary directory beside the target, fsync, two renames under a file lock),
so a save that fails or is killed half-way leaves the previous index loadable, and ``load`` finishes or undoes a
replacement that a crash interrupted. A file that is missing, truncated or altered fails its check against
``meta.json`` and raises :class:`IndexFileError` naming it, before faiss reads anything.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpi.errors import StorageError
from hpi.retrieval.validation import is_int
from hpi.storage import (
    directory_lock,
    load_json,
    readable_path,
    recover,
    verify_files,
    write_directory,
    write_file,
)

FORMAT_NAME = "hpi-feature-index"
FORMAT_VERSION = 1
META_FILE = "meta.json"
FAISS_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.npy"
ID_MAP_FILE = "id_map.json"
INDEX_TYPES: tuple[str, ...] = ("HNSW32", "IVF", "Flat")
METRIC_TYPES: tuple[str, ...] = ("IP", "L2")


class IndexFileError(StorageError):
    """An index directory cannot be written, or a file in it is missing, truncated, altered or of another format.

    Attributes:
        path: the file or directory at fault.
    """


@dataclass(frozen=True)
class IndexSnapshot:
    """Everything a save writes, copied under the index lock so that writing needs no lock."""

    meta: dict[str, Any]  # the meta.json fields other than "files"
    faiss_bytes: np.ndarray | None  # faiss.serialize_index output; None for an empty index
    ids: np.ndarray  # int64 [count], live ids in order
    vectors: np.ndarray  # float32 [count, dim]
    id_map: dict[int, str]  # id -> label of every live item


@dataclass(frozen=True)
class SavedIndex:
    """A saved index's checked files, except the faiss index (read with :func:`read_faiss` once faiss is loaded)."""

    directory: Path  # where the files were read (the target, or its .previous copy)
    meta: dict[str, Any]
    ids: np.ndarray
    vectors: np.ndarray
    id_map: dict[int, str]


def save_index(snapshot: IndexSnapshot, directory: str | os.PathLike[str]) -> Path:
    """Write ``snapshot`` to ``directory``, replacing a previous index there atomically; return its absolute path.

    Raises:
        IndexFileError: the directory cannot be written, or it exists and is not a saved index (never replaced).
    """
    target = Path(os.path.abspath(directory))

    def keep_existing(existing: Path) -> bool:
        if not (existing / META_FILE).is_file() and (not existing.is_dir() or any(existing.iterdir())):
            raise IndexFileError(
                f"{existing} exists and is not a saved index (no {META_FILE}); refusing to replace it", path=existing
            )
        return False

    try:
        return write_directory(
            target, lambda staging: _write_index_files(staging, snapshot), manifest=META_FILE,
            keep_existing=keep_existing,
        )
    except IndexFileError:
        raise
    except StorageError as exc:
        raise IndexFileError(f"cannot save the index to {target}: {exc}", path=target) from exc


def _write_index_files(staging: Path, snapshot: IndexSnapshot) -> dict[str, Any]:
    if snapshot.faiss_bytes is not None:
        write_file(staging / FAISS_FILE, snapshot.faiss_bytes.tofile)
    write_file(staging / VECTORS_FILE, lambda handle: np.save(handle, snapshot.vectors, allow_pickle=False))
    write_file(staging / IDS_FILE, lambda handle: np.save(handle, snapshot.ids, allow_pickle=False))
    id_map_json = json.dumps({str(k): v for k, v in snapshot.id_map.items()}, ensure_ascii=False)
    write_file(staging / ID_MAP_FILE, lambda handle: handle.write(id_map_json.encode()))
    return snapshot.meta


@contextlib.contextmanager
def opened_index(directory: str | os.PathLike[str]) -> Iterator[SavedIndex]:
    """Hold the index's lock (when the filesystem allows) while its checked files are read and used.

    Raises:
        IndexFileError: the directory or one of its files is missing, truncated, altered, inconsistent with the
            others, or of another format version. The message names the file.
    """
    target = Path(os.path.abspath(directory))
    if not target.parent.is_dir():
        raise IndexFileError(f"no saved index at {target}: {target.parent} does not exist", path=target)
    with directory_lock(target, required=False):
        with contextlib.suppress(OSError):
            recover(target)
        source = readable_path(target)
        if not source.is_dir():
            raise IndexFileError(f"no saved index at {target}: the directory does not exist", path=target)
        yield _read_files(source)


def _read_files(directory: Path) -> SavedIndex:
    meta = _read_meta(directory / META_FILE)
    try:
        verify_files(directory, meta["files"], META_FILE)
    except StorageError as exc:
        raise IndexFileError(str(exc), path=exc.path) from exc
    count, dim = meta["count"], meta["dim"]
    ids = _read_npy(directory / IDS_FILE, shape=(count,), dtype=np.int64)
    vectors = _read_npy(directory / VECTORS_FILE, shape=(count, dim), dtype=np.float32)
    id_map = _read_id_map(directory / ID_MAP_FILE)
    id_list = ids.tolist()
    if len(set(id_list)) != count or set(id_map) != set(id_list):
        raise IndexFileError(
            f"{directory / ID_MAP_FILE} does not list the same ids as {directory / IDS_FILE}",
            path=directory / ID_MAP_FILE,
        )
    tombstones = meta["tombstones"]
    if set(tombstones) & set(id_list) or max([-1, *id_list, *tombstones]) >= meta["next_id"]:
        raise IndexFileError(
            f"{directory / META_FILE}: tombstones or next_id contradict {directory / IDS_FILE}",
            path=directory / META_FILE,
        )
    return SavedIndex(directory, meta, ids, vectors, id_map)


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
        meta = load_json(path)
    except StorageError as exc:
        raise IndexFileError(str(exc), path=path) from exc
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
    if not all(is_int(item) for item in meta["tombstones"]):
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
            isinstance(record, dict) and is_int(record.get("size")) and isinstance(record.get("sha256"), str)
        ):
            raise IndexFileError(f"{path}: the record of {name} lacks its size or sha256", path=path)
    return meta


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


def read_faiss(faiss: Any, path: Path, meta: dict[str, Any], expected_count: int) -> Any:
    """The faiss index in ``path``, checked against ``meta`` (dimension, count, metric, index class)."""
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
