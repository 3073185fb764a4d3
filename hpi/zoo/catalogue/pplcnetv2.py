"""PP-LCNetV2 family catalogue: PaddleX's PP-LCNetV2_small, _base and _large.

The architecture (built in its re-parameterised deploy form, as PaddleX exports it) lives in
:mod:`hpi.zoo.nets.pplcnetv2` (PP-ShiTuV2_rec builds on PP-LCNetV2_base).

Preprocessing is PaddleX's default: resize the short side to 256, centre-crop 224, ImageNet mean/std.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

VARIANT_NAMES = ("small", "base", "large")


def _build(variant: str) -> Any:
    from hpi.zoo.nets.pplcnetv2 import build_classifier

    return build_classifier(variant)


MODELS: list[ZooModel] = [
    ZooModel(name=f"PP-LCNetV2_{variant}", build=partial(_build, variant))
    for variant in VARIANT_NAMES
]
