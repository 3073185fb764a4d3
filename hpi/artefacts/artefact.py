"""The typed result of a build: what was built, where it lies, and the cache key it was stored under."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpi.cache import cache_key

SOURCE_KIND = "source"  # the model's own file, used as is (an ONNX model needs no export)


@dataclass(frozen=True)
class Artefact:
    """One built file (or the model's own file) and its identity in the engine cache."""

    kind: str  # the engine-cache kind ("onnx", "onnx-folded", "openvino", "tensorrt", ...) or "source"
    key: str  # the cache key; for a source file, its content hash
    path: Path  # the main file (model.onnx, model.xml, model.plan, ...)
    parts: Mapping[str, Any] = field(default_factory=dict)  # what the key was made from

    @classmethod
    def cached(cls, kind: str, parts: Mapping[str, Any], entry: Path, filename: str) -> Artefact:
        return cls(kind, cache_key(parts), entry / filename, dict(parts))

    @property
    def directory(self) -> Path:
        return self.path.parent
