"""The local model store: PaddleX inference directories by model name, seeded builds and real weights apart.

Layout::

    <root>/<model name>/seeded/   built by `hpi zoo build` (random weights, real architecture)
    <root>/<model name>/real/     official weights a user added with `hpi zoo add`

``<root>`` is ``$HPI_HOME/models`` when ``HPI_HOME`` is set, else ``platformdirs.user_data_dir("hpi")/models``.
:func:`locate` prefers real weights. Every stored directory carries ``hpi_zoo.json`` (which weights, seed, hpi
version, build time) so that results can say whether they came from seeded weights (:func:`weights_kind`).

Writes go through :func:`hpi.storage.write_directory`: a model is written into a temporary directory beside its
target and renamed into place under a per-model file lock, with ``hpi_zoo.json`` (the provenance record plus the
size and SHA-256 of every file) written last. A reader never sees a half-written directory, a failed build leaves
nothing behind, and :func:`locate` never returns a directory whose files do not match their record.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from hpi import storage
from hpi.errors import InvalidConfigError, ModelSourceError, StorageError

logger = logging.getLogger(__name__)

WeightsKind = Literal["seeded", "real"]
PROVENANCE_FILE = "hpi_zoo.json"
_KINDS: tuple[WeightsKind, ...] = ("real", "seeded")  # locate() order


def models_root() -> Path:
    """``$HPI_HOME/models`` if ``HPI_HOME`` is set, else the per-user data directory's ``models``."""
    home = os.environ.get("HPI_HOME")
    if home:
        return Path(home).expanduser() / "models"
    import platformdirs

    return Path(platformdirs.user_data_dir("hpi")) / "models"


def check_name(name: str) -> str:
    """A model name must be usable as one directory name (PaddleX names are: ``PP-HGNetV2-B4``).

    Raises:
        InvalidConfigError: empty, a path, or starting with a dot.
    """
    if not name or name != Path(name).name or name.startswith(".") or "\\" in name:
        raise InvalidConfigError(
            f"model name {name!r} cannot name a store directory; expected e.g. 'PP-LCNet_x1_0'"
        )
    return name


def model_dir(name: str, weights: WeightsKind) -> Path:
    """Where ``name``'s seeded or real directory lives (whether or not it exists)."""
    return models_root() / check_name(name) / weights


def locate(name: str) -> Path | None:
    """The stored directory for ``name``: real weights if added, else the seeded build, else None.

    A directory whose files do not match the sizes and checksums in its ``hpi_zoo.json`` (or that has none)
    is skipped with a warning saying how to replace it: it is never loaded.
    """
    for kind in _KINDS:
        path = model_dir(name, kind)
        if not (path / "inference.yml").is_file():
            continue
        try:
            storage.verify_directory(path, PROVENANCE_FILE)
        except StorageError as exc:
            again = f"hpi zoo add {name} DIR" if kind == "real" else f"hpi zoo build {name} --overwrite"
            logger.warning("ignoring the stored %s model %s: %s; replace it with `%s`", kind, path, exc, again)
            continue
        return path
    return None


def is_stored(path: Path) -> bool:
    """True for a finished store write: the model config and the record written last (checked fully on load)."""
    return (path / "inference.yml").is_file() and "files" in read_provenance(path)


def weights_kind(model_dir: str | Path) -> WeightsKind | None:
    """``"seeded"`` or ``"real"`` from a directory's ``hpi_zoo.json``; None if it has none (not from the store).

    A directory hpi did not write (a user's own export passed as ``model_dir``) has no provenance file, and
    None says exactly that: hpi does not know what its weights are.
    """
    provenance = read_provenance(Path(model_dir))
    kind = provenance.get("weights")
    return kind if kind in ("seeded", "real") else None


def read_provenance(directory: Path) -> dict[str, Any]:
    """``hpi_zoo.json`` of ``directory`` as a dict; {} when missing or unreadable."""
    try:
        data = json.loads((directory / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def provenance_record(weights: WeightsKind, *, seed: int | None, **extra: Any) -> dict[str, Any]:
    """The content of ``hpi_zoo.json`` for a directory written now."""
    from hpi.version import __version__

    record: dict[str, Any] = {
        "weights": weights,
        "seed": seed,
        "hpi_version": __version__,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    record.update(extra)
    return record


def write_atomic(
    target: Path,
    fill: Callable[[Path], dict[str, Any]],
    *,
    overwrite: bool,
    reuse: Callable[[dict[str, Any]], bool] | None = None,
) -> Path:
    """Create directory ``target`` by calling ``fill(tmp)`` on a fresh temporary directory beside it.

    ``fill`` writes the model files and returns the provenance record, which is written last together with every
    file's size and checksum (:func:`hpi.storage.write_directory`). Only then is the temporary directory renamed to
    ``target`` (replacing an old one when ``overwrite``). If ``fill`` raises, the temporary directory is removed
    and ``target`` is left as it was.

    Without ``overwrite``, an existing non-empty ``target`` is kept and returned when ``reuse`` accepts its
    provenance record and its files match their checksums (checked under the lock, so two processes building
    the same model both succeed); a reusable record over damaged files is rebuilt.

    Raises:
        ModelSourceError: ``target`` exists, is not empty and not reusable, and ``overwrite`` is False; or the
            store cannot be written.
    """

    def keep_existing(existing_dir: Path) -> bool:
        if overwrite or not _non_empty(existing_dir):
            return False
        existing = read_provenance(existing_dir)
        if reuse is not None and reuse(existing):
            if storage.is_complete(existing_dir, PROVENANCE_FILE):
                return True
            logger.warning("%s is incomplete or damaged; rebuilding it", existing_dir)
            return False
        held = f" (weights={existing.get('weights')}, seed={existing.get('seed')})" if existing else ""
        raise ModelSourceError(f"{existing_dir} already exists{held}; pass overwrite=True (--overwrite) to replace it")

    try:
        return storage.write_directory(target, fill, manifest=PROVENANCE_FILE, keep_existing=keep_existing)
    except StorageError as exc:
        raise ModelSourceError(f"cannot write the model store directory {target}: {exc}") from exc


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def add(name: str, src_dir: str | Path, *, overwrite: bool = True) -> Path:
    """Copy a PaddleX inference directory with real weights into the store as ``<name>/real``.

    Args:
        name: the PaddleX model name; must equal the directory's ``Global.model_name``.
        src_dir: the directory (``inference.json`` or ``.pdmodel``, ``inference.pdiparams``, ``inference.yml``).
        overwrite: replace weights added before (the default: adding again means "use these").

    Raises:
        ModelSourceError: the directory is not a loadable model, or its model name differs.
    """
    from hpi.source import ModelSource

    check_name(name)
    source = ModelSource.from_path(src_dir, model_name=name)
    src = source.directory

    def fill(tmp: Path) -> dict[str, Any]:
        for item in sorted(src.iterdir()):
            if item.name == PROVENANCE_FILE or item.name.startswith("."):  # e.g. PaddleX's model_dir/.cache
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        return provenance_record("real", seed=None, model_name=name, source=str(src.resolve()))

    return write_atomic(model_dir(name, "real"), fill, overwrite=overwrite)
