"""The offline model zoo: real architectures with seeded weights, saved exactly like PaddleX inference dirs.

Official PaddleX weights cannot be downloaded here, and latency depends on the architecture rather than the
weights, so hpi builds each architecture in Paddle, seeds its weights (so outputs are decisive) and stores it in
the local model store. Real weights a user downloaded elsewhere can be added to the store and are then preferred.

* :mod:`hpi.zoo.catalogue`: which models exist and how to build them (no Paddle import).
* :mod:`hpi.zoo.nets`: the networks in Paddle, with their shared layers.
* :mod:`hpi.zoo.seeding` and :mod:`hpi.zoo.export` (and :mod:`hpi.zoo.shituv2_seeding` for PP-ShiTuV2): seeding and writing PaddleX
  inference directories.
* :mod:`hpi.zoo.store`: the local model store, written through :mod:`hpi.storage`.

>>> from hpi import zoo
>>> path = zoo.build("PP-LCNet_x1_0")          # doctest: +SKIP
>>> zoo.locate("PP-LCNet_x1_0") == path        # doctest: +SKIP
True

Importing this package does not import Paddle; building does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpi.errors import UnknownModelError
from hpi.zoo.catalogue import ZooModel, zoo_models
from hpi.zoo.store import (
    add,
    is_stored,
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


def get_model(name: str) -> ZooModel:
    """The zoo record for ``name``.

    Raises:
        UnknownModelError: no family module defines ``name``; the message lists the available names.
    """
    models = zoo_models()
    if name in models:
        return models[name]
    raise UnknownModelError(f"no zoo model {name!r}; available: {', '.join(models)}")


def list_models() -> list[ZooEntry]:
    """Every buildable model in catalogue order, with its stored directories."""
    models = zoo_models()
    out = []
    for model in models.values():
        seeded, real = model_dir(model.name, "seeded"), model_dir(model.name, "real")
        out.append(
            ZooEntry(
                model,
                seeded if is_stored(seeded) else None,
                real if is_stored(real) else None,
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
        report = load_exporter(model)(model, tmp, seed=seed)
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


def load_exporter(model: ZooModel) -> Callable[..., Any]:
    """The function that seeds and writes ``model``: the one its record names (``"module:function"``, importing
    that module, which may import Paddle when called), else :func:`hpi.zoo.export.export_zoo_model`."""
    if model.exporter is None:
        from hpi.zoo.export import export_zoo_model

        return export_zoo_model
    module_name, _, function = model.exporter.partition(":")
    return getattr(importlib.import_module(module_name), function)
