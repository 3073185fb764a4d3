"""StarNet family catalogue: PaddleX's StarNet-S1..S4.

The architecture lives in :mod:`hpi.zoo.nets.starnet` (imported only when a model is built).

Preprocessing as PaddleX's configs: ResizeImage{resize_short: 224} (OpenCV bilinear), CropImage{size: 224},
ImageNet mean/std.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

# Published parameter counts in millions (Ma et al. 2024, ma-xu/Rewrite-the-Stars README; PaddleClas' table
# quotes the same): 2.9, 3.7, 5.8, 7.5.
PUBLISHED_PARAMS_M: dict[str, float] = {
    "StarNet-S1": 2.9,
    "StarNet-S2": 3.7,
    "StarNet-S3": 5.8,
    "StarNet-S4": 7.5,
}

# (base_dim, depths) per variant
ARCHS: dict[str, tuple[int, tuple[int, ...]]] = {
    "StarNet-S1": (24, (2, 2, 8, 3)),
    "StarNet-S2": (32, (1, 2, 6, 2)),
    "StarNet-S3": (32, (2, 2, 8, 4)),
    "StarNet-S4": (32, (3, 3, 12, 5)),
}


def _build(name: str) -> Any:
    from hpi.zoo.nets.layers import SoftmaxOutput
    from hpi.zoo.nets.starnet import StarNet

    model = SoftmaxOutput(StarNet(*ARCHS[name]))
    model.eval()
    return model


MODELS: list[ZooModel] = [
    ZooModel(
        name=name,
        build=partial(_build, name),
        extra={"published_params_m": PUBLISHED_PARAMS_M[name]},
    )
    for name in ARCHS
]
