"""The offline model zoo: real architectures with seeded weights, saved exactly like PaddleX inference dirs.

Official PaddleX weights cannot be downloaded here, and latency depends on the architecture rather than the
weights, so hpi builds each architecture in Paddle, seeds its weights (so outputs are decisive, see
:mod:`hpi.zoo.export`) and stores it in the local model store (:mod:`hpi.zoo.store`). Real weights a user
downloaded elsewhere can be added to the store and are then preferred.

>>> from hpi import zoo
>>> path = zoo.build("PP-LCNet_x1_0")          # doctest: +SKIP
>>> zoo.locate("PP-LCNet_x1_0") == path        # doctest: +SKIP
True

Importing this package does not import Paddle; building does.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpi.errors import UnknownModelError
from hpi.zoo.registry import FAMILY_MODULES, ZooModel, zoo_models
from hpi.zoo.store import (
    add,
    locate,
    model_dir,
    provenance_record,
    weights_kind,
    write_atomic,
)


@dataclass(frozen=True)
class ZooEntry:
    """A buildable model and what the store holds for it."""

    model: ZooModel
    seeded: Path | None  # the seeded build, if any
    real: Path | None  # real weights added with `add`, if any


def _catalogue() -> tuple[dict[str, ZooModel], list[str]]:
    """Models of every family module that imports, and the modules that did not (named, with the reason)."""
    models: dict[str, ZooModel] = {}
    broken: list[str] = []
    for mod_name in FAMILY_MODULES:
        try:
            module = importlib.import_module(f"hpi.zoo.{mod_name}")
        except ImportError as exc:
            broken.append(f"hpi.zoo.{mod_name} ({exc})")
            continue
        for model in module.MODELS:
            models.setdefault(model.name, model)
    return models, broken


def get_model(name: str) -> ZooModel:
    """The zoo record for ``name``.

    Raises:
        UnknownModelError: no family module defines ``name``; the message lists the available names.
    """
    models, broken = _catalogue()
    if name in models:
        return models[name]
    hint = f" (not importable: {'; '.join(broken)})" if broken else ""
    raise UnknownModelError(f"no zoo model {name!r}; available: {', '.join(models)}{hint}")


def list_models() -> list[ZooEntry]:
    """Every buildable model in catalogue order, with its stored directories."""
    models, _ = _catalogue()
    out = []
    for model in models.values():
        seeded, real = model_dir(model.name, "seeded"), model_dir(model.name, "real")
        out.append(
            ZooEntry(
                model,
                seeded if (seeded / "inference.yml").is_file() else None,
                real if (real / "inference.yml").is_file() else None,
            )
        )
    return out


def build(name: str, output: str | Path | None = None, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Build ``name`` with seeded weights as a PaddleX inference directory.

    Args:
        name: PaddleX model name, e.g. ``"PP-HGNetV2-B4"``.
        output: directory to write (created); default: the store's ``<name>/seeded``.
        seed: seeds every random draw; the same seed gives the same weights.
        overwrite: replace an existing directory. Without it, an existing build with the same seed is
            returned as is, and one with another seed (or foreign content) is an error.

    Returns:
        The model directory.

    Raises:
        UnknownModelError: ``name`` is not in the zoo.
        ModelSourceError: the target exists and ``overwrite`` is False (and it is not this build).
        ExportError: seeding or saving failed (nothing is left behind).
    """
    model = get_model(name)
    target = Path(output).expanduser() if output is not None else model_dir(name, "seeded")

    def fill(tmp: Path) -> dict[str, Any]:
        from hpi.zoo.export import export_zoo_model

        # A family with its own output format (detectors, PaddleClas' exact recognition config) names its exporter.
        exporter = model.extra.get("export", export_zoo_model)
        report = exporter(model, tmp, seed=seed)
        return provenance_record(
            "seeded",
            seed=seed,
            model_name=name,
            calibration=report.calibration,
            calibration_min_margin=report.min_margin,
            calibration_classes=list(report.classes),
        )

    def same_build(existing: dict[str, Any]) -> bool:
        return (
            existing.get("weights") == "seeded"
            and existing.get("seed") == seed
            and existing.get("model_name") == name
        )

    return write_atomic(target, fill, overwrite=overwrite, reuse=same_build)


__all__ = [
    "ZooEntry",
    "ZooModel",
    "add",
    "build",
    "get_model",
    "list_models",
    "locate",
    "weights_kind",
    "zoo_models",
]
