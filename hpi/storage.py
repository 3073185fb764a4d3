"""The one way hpi persists a directory: locked, atomic, with a manifest of sizes and checksums written last.

Every directory hpi keeps on disk (engine-cache entries, saved feature indexes, model-store directories) is
written by :func:`write_directory`:

1. under a file lock (``.<name>.lock`` beside the target, or a lock path the caller owns), so that two
   processes never write the same directory at once;
2. into a fresh temporary directory ``.<name>.tmp-<random>`` beside the target (same filesystem), which the
   caller's ``fill`` populates;
3. every file is flushed to disk, then the manifest (a JSON object: the caller's fields plus ``files``, the size
   and SHA-256 of each file) is written **last**;
4. the temporary directory is renamed into place; an old directory is first renamed to ``.<name>.previous`` and
   removed after the new one is in place. A crash between the two renames is finished or undone by the next
   writer or reader (:func:`recover`).

Readers call :func:`verify_directory`: a directory without its manifest, or whose files do not match it, raises
:class:`~hpi.errors.StorageError` naming the file, so a partial or corrupted directory is never loaded. A
successful check is remembered for the process, keyed on every file's size, modification time and inode, so
re-reading an unchanged directory costs a few ``stat`` calls; rewriting a file forces a fresh check.

Example::

    def fill(staging: Path) -> dict:
        (staging / "model.onnx").write_bytes(onnx_bytes)
        return {"kind": "onnx"}

    entry = write_directory(root / "onnx" / key, fill)
    verify_directory(entry)["kind"]  # "onnx"; raises StorageError if a file was altered since
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from hpi.errors import StorageError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK_TIMEOUT_S = 3600.0  # TensorRT builds of large models can take many minutes

_verified: dict[Path, tuple[Any, ...]] = {}  # directory -> stat signature it was verified with
_verified_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_file(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Create ``path`` (it must not exist), let ``write`` fill the open binary handle, flush and fsync it."""
    with open(path, "xb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def lock_path_for(target: Path) -> Path:
    """The default lock file of ``target``: ``.<name>.lock`` beside it."""
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def directory_lock(
    target: Path, *, lock_path: Path | None = None, timeout: float = LOCK_TIMEOUT_S, required: bool = True
) -> Iterator[None]:
    """Hold the lock of ``target`` (across threads and processes).

    Args:
        target: the directory (or file) the lock protects.
        lock_path: the lock file; default :func:`lock_path_for` ``(target)``.
        timeout: seconds to wait for another holder.
        required: a writer needs the lock; a reader (``required=False``) on a read-only filesystem goes on
            without it.

    Raises:
        StorageError: the lock cannot be created or was not released within ``timeout`` (only when required).
    """
    path = lock_path if lock_path is not None else lock_path_for(target)
    lock = FileLock(str(path), timeout=timeout)
    acquired = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        acquired = True
    except Timeout as exc:
        raise StorageError(f"timed out after {timeout:.0f} s waiting for the lock on {target}", path=target) from exc
    except OSError as exc:
        if required:
            raise StorageError(f"cannot lock {target} for writing: {exc}", path=target) from exc
    try:
        yield
    finally:
        if acquired:
            lock.release()


def _backup_path(target: Path) -> Path:
    return target.parent / f".{target.name}.previous"


def recover(target: Path) -> None:
    """Finish or undo a replacement that crashed between its two renames. Call with the lock held.

    The new directory made it in: the old copy's removal was missed, remove it. The old directory was moved
    aside and the new one never arrived: put the old one back.
    """
    backup = _backup_path(target)
    if not backup.exists():
        return
    if target.exists():
        shutil.rmtree(backup)
    else:
        os.rename(backup, target)
        _fsync_path(target.parent)


def readable_path(target: Path) -> Path:
    """Where a reader finds ``target``'s content: ``target``, or its ``.previous`` copy when an interrupted
    replacement could not be undone (a read-only filesystem)."""
    backup = _backup_path(target)
    return backup if not target.is_dir() and backup.is_dir() else target


def write_directory(
    target: str | os.PathLike[str],
    fill: Callable[[Path], Mapping[str, Any] | None],
    *,
    manifest: str = MANIFEST,
    keep_existing: Callable[[Path], bool] | None = None,
    lock_path: Path | None = None,
    timeout: float = LOCK_TIMEOUT_S,
) -> Path:
    """Write directory ``target`` atomically under its lock, with a manifest of its files written last.

    Args:
        target: the directory to create or replace; its parents are created.
        fill: called with an empty temporary directory beside ``target``; writes the files and returns the
            manifest's other fields (or None). If it raises, nothing is left behind and ``target`` is unchanged.
        manifest: the manifest's file name inside the directory.
        keep_existing: called under the lock when ``target`` exists; True keeps it (nothing is written and
            ``target`` is returned), False replaces it. It may raise to refuse both. Without it, ``target`` is
            replaced.
        lock_path: the lock file (default ``.<name>.lock`` beside ``target``).
        timeout: seconds to wait for the lock.

    Returns:
        ``target`` as an absolute path.

    Raises:
        StorageError: the lock, the temporary directory, the manifest or a rename failed, or ``fill`` raised an
            ``OSError`` (a full disk, say). Other exceptions of ``fill`` and ``keep_existing`` propagate unchanged.
    """
    target = Path(os.path.abspath(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {target.parent} to write {target.name}: {exc}", path=target) from exc
    with directory_lock(target, lock_path=lock_path, timeout=timeout):
        staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:16]}"
        try:
            recover(target)
            if (target.exists() or target.is_symlink()) and keep_existing is not None and keep_existing(target):
                return target
            for stale in target.parent.glob(f".{target.name}.tmp-*"):
                # Left by a writer that was killed: nobody else writes it while we hold the lock.
                shutil.rmtree(stale, ignore_errors=True)
            staging.mkdir(mode=0o777)  # the umask applies, as for any directory the user creates
            fields = fill(staging) or {}
            _seal(staging, manifest, fields)
            _swap_in(staging, target)
        except OSError as exc:
            raise StorageError(f"cannot write {target}: {exc}", path=target) from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _seal(staging: Path, manifest: str, fields: Mapping[str, Any]) -> None:
    """fsync every file ``fill`` wrote, then write the manifest of their sizes and checksums."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(staging.rglob("*")):
        if path.is_file() and not path.is_symlink():
            _fsync_path(path)  # read-only descriptors suffice: copied files may be read-only
            files[path.relative_to(staging).as_posix()] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    if manifest in files:
        raise StorageError(f"{staging / manifest} was written by the caller; the manifest is written last", path=staging)
    text = json.dumps({**fields, "files": files}, ensure_ascii=False, indent=2, default=str) + "\n"
    write_file(staging / manifest, lambda handle: handle.write(text.encode("utf-8")))
    _fsync_path(staging)


def _swap_in(staging: Path, target: Path) -> None:
    backup = _backup_path(target)
    if target.exists() or target.is_symlink():
        os.rename(target, backup)
    os.rename(staging, target)
    _fsync_path(target.parent)
    if backup.exists() or backup.is_symlink():
        if backup.is_dir() and not backup.is_symlink():
            shutil.rmtree(backup)
        else:
            backup.unlink()


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_file_atomic(path: str | os.PathLike[str], data: bytes, *, locked: bool = True) -> Path:
    """Replace one file atomically: a temporary file beside it (removed whatever happens), fsynced, renamed into
    place, under the file's lock (``.<name>.lock`` beside it) unless ``locked=False``, for files that only one
    writer writes and that should not leave a lock file behind, such as a result saved into a user's folder.

    Raises:
        StorageError: the directory, the lock or the write failed.
    """
    target = Path(os.path.abspath(path))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {target.parent} to write {target.name}: {exc}", path=target) from exc
    with directory_lock(target) if locked else contextlib.nullcontext():
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:16]}"
        try:
            write_file(tmp, lambda handle: handle.write(data))
            os.replace(tmp, target)
            _fsync_path(target.parent)
        except OSError as exc:
            raise StorageError(f"cannot write {target}: {exc.strerror or exc}", path=target) from exc
        finally:
            tmp.unlink(missing_ok=True)
    return target


# ------------------------------------------------------------------------------------------------------ reading


def load_json(path: Path) -> Any:
    """The JSON content of a manifest file.

    Raises:
        StorageError: the file is missing, unreadable or not JSON (the message names it).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StorageError(f"{path} is missing: not a complete directory, or an incomplete one", path=path) from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StorageError(
            f"{path} is unreadable or not valid JSON (truncated or corrupted): {exc}", path=path
        ) from exc


def read_manifest(directory: Path, manifest: str = MANIFEST) -> dict[str, Any]:
    """The manifest of ``directory`` as a dict whose ``files`` is a dict; nothing is verified yet.

    Raises:
        StorageError: the manifest is missing, unreadable, not JSON, or has no ``files`` table.
    """
    path = directory / manifest
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise StorageError(f"{path} is not a manifest: it has no 'files' table", path=path)
    return data


def verify_files(directory: Path, files: Mapping[str, Any], manifest: str = MANIFEST) -> None:
    """Check every file listed in ``files`` (name -> ``{"size", "sha256"}``) against its size and checksum.

    Raises:
        StorageError: a record is malformed, or a file is missing, of another size or another checksum; the
            message and ``path`` name the file.
    """
    signature = _signature(directory, files, manifest)
    with _verified_lock:
        if signature is not None and _verified.get(directory) == signature:
            return
    for name, record in files.items():
        path = directory / name
        if not (
            isinstance(record, dict)
            and isinstance(record.get("size"), int)
            and not isinstance(record.get("size"), bool)
            and isinstance(record.get("sha256"), str)
        ):
            raise StorageError(f"{directory / manifest}: the record of {name} lacks its size or sha256", path=path)
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise StorageError(f"{path} is missing from {directory}", path=path) from exc
        except OSError as exc:
            raise StorageError(f"{path} is unreadable: {exc}", path=path) from exc
        if size != record["size"]:
            raise StorageError(
                f"{path} is {size} bytes, {manifest} records {record['size']}: the file is truncated or was replaced",
                path=path,
            )
        try:
            digest = file_sha256(path)
        except OSError as exc:
            raise StorageError(f"{path} is unreadable: {exc}", path=path) from exc
        if digest != record["sha256"]:
            raise StorageError(f"{path} fails its SHA-256 check against {manifest}: the file is corrupted", path=path)
    if signature is not None:
        with _verified_lock:
            _verified[directory] = signature


def _signature(directory: Path, files: Mapping[str, Any], manifest: str) -> tuple[Any, ...] | None:
    """Size, mtime and inode of the manifest and every listed file; None when one cannot be stat'ed."""
    out = []
    for name in (manifest, *sorted(files)):
        try:
            st = (directory / name).stat()
        except OSError:
            return None
        out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def verify_directory(directory: str | os.PathLike[str], manifest: str = MANIFEST) -> dict[str, Any]:
    """Read ``directory``'s manifest and check every file it lists; return the manifest.

    Raises:
        StorageError: the manifest or a file is missing, truncated, altered or malformed (the message names it).
    """
    path = Path(directory)
    data = read_manifest(path, manifest)
    verify_files(path, data["files"], manifest)
    return data


def is_complete(directory: str | os.PathLike[str], manifest: str = MANIFEST) -> bool:
    """True when :func:`verify_directory` passes; the reason it does not is logged at debug level."""
    try:
        verify_directory(directory, manifest)
    except StorageError as exc:
        logger.debug("%s", exc)
        return False
    return True
