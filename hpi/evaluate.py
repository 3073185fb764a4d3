"""Accuracy on a labelled dataset: top-1 / top-5 of normal mode and high-performance mode side by side."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpi.api import create_model
from hpi.config import HpiConfig
from hpi.errors import InvalidInputError
from hpi.loading import locate_model


def read_dataset(directory: str | Path) -> tuple[list[tuple[Path, int]], list[str] | None]:
    """PaddleX's classification layout: ``val.txt`` of ``path label`` lines, optional ``label.txt`` of
    ``id name`` lines; paths are relative to the dataset directory."""
    root = Path(directory)
    val = root / "val.txt"
    if not val.is_file():
        raise InvalidInputError(f"{root}: val.txt is missing (PaddleX classification layout)")
    items = []
    for n, line in enumerate(val.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise InvalidInputError(f"{val}:{n}: expected 'path label', got {line!r}")
        path = root / parts[0]
        if not path.is_file():
            raise InvalidInputError(f"{val}:{n}: {path} does not exist")
        items.append((path, int(parts[1])))
    if not items:
        raise InvalidInputError(f"{val}: no samples")
    names = None
    label_file = root / "label.txt"
    if label_file.is_file():
        names = [ln.split(maxsplit=1)[1] if len(ln.split(maxsplit=1)) == 2 else ln
                 for ln in label_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return items, names


@dataclass(frozen=True)
class EvalReport:
    """Both modes' accuracy on one dataset."""

    model: str
    samples: int
    normal: dict[str, Any]  # {"backend", "top1", "top5"}
    high_performance: dict[str, Any]
    top1_agreement: float  # fraction of samples where both modes give the same top-1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(model: str, dataset: str | Path, *, model_dir: str | None = None, device: str | None = "cpu",
             hpi_config: Mapping[str, Any] | HpiConfig | None = None, batch_size: int = 8, cache_dir: str | None = None) -> EvalReport:
    """Top-1 / top-5 of normal mode and high-performance mode side by side on a labelled dataset
    (:func:`read_dataset`'s layout); a model not in the store is built from the zoo."""
    items, _ = read_dataset(dataset)
    paths, labels = [str(p) for p, _ in items], np.array([label for _, label in items])
    modes = {"normal": False, "high_performance": True}
    preds: dict[str, list[list[int]]] = {}
    summary: dict[str, dict[str, Any]] = {}
    source_dir = model_dir or str(locate_model(model, build=True).directory)
    for mode, hpip in modes.items():
        predictor = create_model(model, source_dir, device=device, use_hpip=hpip, hpi_config=hpi_config,
                                 cache_dir=cache_dir, topk=5)
        ids = [r["class_ids"] for r in predictor.predict(paths, batch_size=batch_size)]
        preds[mode] = ids
        top1 = float(np.mean([i[0] == y for i, y in zip(ids, labels)]))
        top5 = float(np.mean([y in i[:5] for i, y in zip(ids, labels)]))
        summary[mode] = {"backend": predictor.engine.describe(), "top1": top1, "top5": top5}
        predictor.close()
    agree = float(np.mean([a[0] == b[0] for a, b in zip(preds["normal"], preds["high_performance"])]))
    return EvalReport(model, len(items), summary["normal"], summary["high_performance"], agree)
