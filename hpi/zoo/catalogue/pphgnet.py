"""PP-HGNet family catalogue: PaddleX's PP-HGNet_tiny, _small and _base.

The architecture lives in :mod:`hpi.zoo.nets.pphgnet`.

Preprocessing: PaddleX's configs declare a PIL bicubic resize of the short side (232 for tiny, 236 for small
and base) before the 224 crop, but PaddleX's predictor ignores the filter and resizes with OpenCV bilinear;
the inference.yml hpi writes says what is executed (LINEAR), and the model card keeps what was declared.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

# PaddleX name suffix -> short side of the resize before the 224 centre crop
RESIZE_SHORT = {"tiny": 232, "small": 236, "base": 236}


def _build(variant: str) -> Any:
    from hpi.zoo.nets.pphgnet import build_classifier

    return build_classifier(variant)


MODELS: list[ZooModel] = [
    ZooModel(
        name=f"PP-HGNet_{variant}",
        build=partial(_build, variant),
    )
    for variant, short in RESIZE_SHORT.items()
]
