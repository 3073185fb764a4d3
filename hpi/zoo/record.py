"""The zoo's record of one buildable architecture (:class:`ZooModel`), below both the catalogue that lists the
records and the modules that seed and export them, so neither has to import the other.

The preprocessing and published figures of a model live in its model card (:mod:`hpi.cards`); a record holds only
what building it needs: the network, its task and input geometry, and who writes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ZooModel:
    """One buildable architecture."""

    name: str  # the PaddleX model name, e.g. "PP-HGNetV2-B4"
    family: str  # e.g. "PP-HGNetV2"
    build: Callable[[], Any]  # returns a paddle.nn.Layer in eval mode taking NCHW float32 (ends in softmax)
    task: Literal["classification", "embedding", "detection"] = "classification"
    input_size: int = 224  # model input side after crop
    resize_short: int | None = 256  # None: resize straight to input_size
    extra: dict[str, Any] = field(default_factory=dict)  # family specifics (mean/std overrides, embedding dim, ...)
    # "module:function" that seeds and writes the model, with the signature of hpi.zoo.export.export_zoo_model;
    # None: that generic exporter. Families with their own output format (detectors, PaddleClas' exact recognition
    # config) name theirs.
    exporter: str | None = None
