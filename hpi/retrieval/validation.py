"""Checking what callers hand the feature index: feature matrices, labels and ids, with errors that name the item."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from hpi.errors import InvalidInputError


def is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def as_matrix(data: Any, *, dim: int | None, what: str, allow_vector: bool = False) -> np.ndarray:
    try:
        matrix = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what} must be a numeric array [N, D], got {type(data).__name__}: {exc}"
        ) from exc
    if allow_vector and matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        expected = "[N, D] or [D]" if allow_vector else "[N, D]"
        raise InvalidInputError(
            f"{what} must be a 2-D array {expected} with D >= 1, got shape {matrix.shape}"
        )
    if dim is not None and matrix.shape[1] != dim:
        raise InvalidInputError(f"{what} have dimension {matrix.shape[1]}, the index has dimension {dim}")
    if not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise InvalidInputError(f"{what} row {bad} contains NaN or infinity")
    return np.ascontiguousarray(matrix)


def as_labels(labels: Sequence[str], count: int) -> list[str]:
    if isinstance(labels, str):
        raise InvalidInputError(
            "labels must be a sequence of strings, one per feature row, not a single string"
        )
    label_list = list(labels)
    if len(label_list) != count:
        raise InvalidInputError(f"got {len(label_list)} labels for {count} feature rows")
    for position, label in enumerate(label_list):
        if not isinstance(label, str) or not label:
            raise InvalidInputError(f"label {position} must be a non-empty string, got {label!r}")
    return [str(label) for label in label_list]


def as_ids(ids: Iterable[int]) -> list[int]:
    if isinstance(ids, str | bytes) or is_int(ids):
        raise InvalidInputError(f"ids must be a sequence of integers, got {ids!r}")
    wanted: dict[int, None] = {}
    for item_id in ids:
        if not is_int(item_id):
            raise InvalidInputError(f"ids must be integers, got {item_id!r}")
        wanted[int(item_id)] = None
    return list(wanted)
