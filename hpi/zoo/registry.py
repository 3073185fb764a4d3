"""The zoo's catalogue: which architectures hpi can build offline, and how.

Each family module (``hpi/zoo/<family>.py``) defines ``MODELS: list[ZooModel]``; :func:`zoo_models` collects them
from the modules named in ``FAMILY_MODULES``. Paddle is imported only when a model is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

# Family modules, in the order `hpi models` lists them.
FAMILY_MODULES = (
    "pplcnet",
    "pplcnetv2",
    "pphgnet",
    "pphgnetv2",
    "resnet",
    "mobilenet",
    "shitu",
    "convnext",
    "swin",
    "clip_vit",
    "starnet",
    "fasternet",
    "mobilenetv4",
)


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


def zoo_models() -> dict[str, ZooModel]:
    """Every buildable model by name. Duplicate names across families are an error."""
    out: dict[str, ZooModel] = {}
    for mod_name in FAMILY_MODULES:
        module = importlib.import_module(f"hpi.zoo.{mod_name}")
        for model in module.MODELS:
            if model.name in out:
                raise ValueError(f"zoo model {model.name!r} is defined twice (second time in hpi.zoo.{mod_name})")
            out[model.name] = model
    return out
