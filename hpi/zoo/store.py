"""The local model store: PaddleX inference directories by model name, seeded builds and real weights apart.

Layout::

    <root>/<model name>/seeded/   built by `hpi zoo build` (random weights, real architecture)
    <root>/<model name>/real/     official weights a user added with `hpi zoo add`

``<root>`` is ``$HPI_HOME/models`` when ``HPI_HOME`` is set, else ``platformdirs.user_data_dir("hpi")/models``.
:func:`locate` prefers real weights. Every stored directory carries ``hpi_zoo.json`` (which weights, seed, hpi
version, build time) so that results can say whether they came from seeded weights (:func:`weights_kind`).

Writes are atomic: a model is written into a temporary directory beside its target and renamed into place
under a per-model file lock, so a reader never sees a half-written directory, and a failed build leaves
nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from hpi.errors import InvalidConfigError, ModelSourceError

WeightsKind = Literal["seeded", "real"]
PROVENANCE_FILE = "hpi_zoo.json"
_KINDS: tuple[WeightsKind, ...] = ("real", "seeded")  # locate() order


@dataclass(frozen=True)
class StoredModel:
    """One directory in the store."""

    name: str  # PaddleX model name
    weights: WeightsKind  # which sub-directory
    path: Path  # the PaddleX inference directory
    provenance: dict[str, Any]  # content of hpi_zoo.json ({} when unreadable)


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
    """The stored directory for ``name``: real weights if added, else the seeded build, else None."""
    for kind in _KINDS:
        path = model_dir(name, kind)
        if (path / "inference.yml").is_file():
            return path
    return None


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
    from hpi import __version__

    record: dict[str, Any] = {
        "weights": weights,
        "seed": seed,
        "hpi_version": __version__,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    record.update(extra)
    return record


def list_stored() -> list[StoredModel]:
    """Every model directory in the store, by name, real before seeded."""
    root = models_root()
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        for kind in _KINDS:
            path = entry / kind
            if (path / "inference.yml").is_file():
                out.append(StoredModel(entry.name, kind, path, read_provenance(path)))
    return out


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Serialise writers of one model directory (also across processes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        yield


def write_atomic(
    target: Path,
    fill: Callable[[Path], dict[str, Any]],
    *,
    overwrite: bool,
    reuse: Callable[[dict[str, Any]], bool] | None = None,
) -> Path:
    """Create directory ``target`` by calling ``fill(tmp)`` on a fresh temporary directory beside it.

    ``fill`` writes the model files and returns the provenance record, which is written last. Only then is
    the temporary directory renamed to ``target`` (replacing an old one when ``overwrite``). If ``fill`` raises,
    the temporary directory is removed and ``target`` is left as it was.

    Without ``overwrite``, an existing non-empty ``target`` is kept and returned when ``reuse`` accepts its
    provenance record (checked under the lock, so two processes building the same model both succeed).

    Raises:
        ModelSourceError: ``target`` exists, is not empty and not reusable, and ``overwrite`` is False.
    """
    target = Path(target)
    with _locked(target):
        if _non_empty(target) and not overwrite:
            existing = read_provenance(target)
            if reuse is not None and reuse(existing):
                return target
            held = f" (weights={existing.get('weights')}, seed={existing.get('seed')})" if existing else ""
            raise ModelSourceError(
                f"{target} already exists{held}; pass overwrite=True (--overwrite) to replace it"
            )
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir(mode=0o777)  # the umask applies, as for any directory the user creates
        try:
            record = fill(tmp)
            (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is first renamed aside, then deleted."""
    if target.exists() or target.is_symlink():
        trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, trash)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(trash, target)  # put the old one back
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, target)


def add(name: str, src_dir: str | Path, *, overwrite: bool = True) -> Path:
    """Copy a PaddleX inference directory with real weights into the store as ``<name>/real``.

    Args:
        name: the PaddleX model name; must equal the directory's ``Global.model_name``.
        src_dir: the directory (``inference.json`` or ``.pdmodel``, ``inference.pdiparams``, ``inference.yml``).
        overwrite: replace weights added before (the default: adding again means "use these").

    Raises:
        ModelSourceError: the directory is not a loadable model, or its model name differs.
    """
    from hpi.model import ModelSource

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
