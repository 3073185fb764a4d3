"""The zoo's catalogue: which architectures hpi can build offline, and how, without importing Paddle.

Each family module (``hpi/zoo/catalogue/<family>.py``) defines ``MODELS: list[ZooModel]``; :func:`zoo_models`
collects them from the modules named in ``FAMILY_MODULES``. A record's ``build`` imports its network from
:mod:`hpi.zoo.nets` (and so Paddle) only when called; its ``exporter`` names the function that seeds and writes it.
A family module that fails to import, or two records with one name, are bugs in hpi: :class:`HpiInternalError`.
"""

from __future__ import annotations

import importlib

from hpi.errors import HpiInternalError
from hpi.zoo.record import ZooModel

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
