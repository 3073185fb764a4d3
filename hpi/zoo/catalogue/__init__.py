"""The zoo's catalogue: which architectures hpi can build offline, and how, without importing Paddle.

Each family module (``hpi/zoo/catalogue/<family>.py``) defines ``MODELS: list[ZooModel]``; :func:`zoo_models`
collects them from the modules named in ``FAMILY_MODULES``. A record's ``build`` imports its network from
:mod:`hpi.zoo.nets` (and so Paddle) only when called; its ``exporter`` names the function that seeds and writes it.
A family module that fails to import, or two records with one name, are bugs in hpi: :class:`HpiInternalError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hpi.errors import HpiInternalError

# Family modules, in the order `hpi models` lists them.
FAMILY_MODULES = (
    "pplcnet",
    "pplcnetv2",
    "pphgnet",
    "pphgnetv2",
    "resnet",
    "mobilenet",
    "pp_shituv2",
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
    # "module:function" that seeds and writes the model (signature of hpi.zoo.seeding.export_zoo_model); families
    # with their own output format (detectors, PaddleClas' exact recognition config) name theirs.
    exporter: str = "hpi.zoo.seeding:export_zoo_model"

    def load_exporter(self) -> Callable[..., Any]:
        """The function named by ``exporter`` (importing its module, which may import Paddle when called)."""
        module_name, _, function = self.exporter.partition(":")
        return getattr(importlib.import_module(module_name), function)


def zoo_models() -> dict[str, ZooModel]:
    """Every buildable model by name, in catalogue order.

    Raises:
        HpiInternalError: a family module does not import, or two records share a name (both are bugs in hpi,
            never a reason to list fewer models).
    """
    out: dict[str, ZooModel] = {}
    where: dict[str, str] = {}
    for mod_name in FAMILY_MODULES:
        module_path = f"{__name__}.{mod_name}"
        try:
            module = importlib.import_module(module_path)
        except ImportError as exc:
            raise HpiInternalError(f"zoo family module {module_path} does not import: {exc}") from exc
        for model in module.MODELS:
            if model.name in out:
                raise HpiInternalError(
                    f"zoo model {model.name!r} is defined twice: in {where[model.name]} and in {module_path}"
                )
            out[model.name] = model
            where[model.name] = module_path
    return out
