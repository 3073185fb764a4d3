"""PP-HGNetV2 family catalogue: PaddleX's PP-HGNetV2-B0 ... PP-HGNetV2-B6.

The architecture lives in :mod:`hpi.zoo.nets.pphgnetv2`.

Preprocessing: PaddleX's configs declare a PIL bicubic resize of the short side to 232 before the 224 crop,
but PaddleX's predictor ignores the filter and resizes with OpenCV bilinear; the inference.yml hpi writes says
what is executed (LINEAR), and the model card keeps what was declared.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

VARIANT_NAMES = ("B0", "B1", "B2", "B3", "B4", "B5", "B6")


def _build(variant: str) -> Any:
    from hpi.zoo.nets.pphgnetv2 import build_classifier

    return build_classifier(variant)


MODELS: list[ZooModel] = [
    ZooModel(
        name=f"PP-HGNetV2-{variant}",
        build=partial(_build, variant),
    )
    for variant in VARIANT_NAMES
]
