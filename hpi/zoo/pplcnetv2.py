"""PP-LCNetV2 family catalogue: PaddleX's PP-LCNetV2_small, _base and _large.

The architecture (built in its re-parameterised deploy form, as PaddleX exports it) lives in
:mod:`hpi.zoo.nets.pplcnetv2`; its classes are re-exported here on first access, so
``from hpi.zoo.pplcnetv2 import PPLCNetV2Backbone`` works (PP-ShiTuV2_rec builds on PP-LCNetV2_base).

Preprocessing is PaddleX's default: resize the short side to 256, centre-crop 224, ImageNet mean/std.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.registry import ZooModel

VARIANT_NAMES = ("small", "base", "large")

_NET_EXPORTS = (
    "STAGES",
    "VARIANTS",
    "RepDepthwiseSeparable",
    "PPLCNetV2",
    "PPLCNetV2Backbone",
    "build_classifier",
)


def _build(variant: str) -> Any:
    from hpi.zoo.nets.pplcnetv2 import build_classifier

    return build_classifier(variant)


def __getattr__(name: str) -> Any:
    """Re-export the network classes lazily (they import Paddle)."""
    if name in _NET_EXPORTS:
        from hpi.zoo.nets import pplcnetv2

        return getattr(pplcnetv2, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MODELS: list[ZooModel] = [
    ZooModel(name=f"PP-LCNetV2_{variant}", family="PP-LCNetV2", build=partial(_build, variant))
    for variant in VARIANT_NAMES
]
