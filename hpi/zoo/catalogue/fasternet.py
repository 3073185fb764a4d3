"""FasterNet family catalogue: PaddleX's FasterNet-T0, -T1, -T2, -S, -M, -L.

The architecture lives in :mod:`hpi.zoo.nets.fasternet` (imported only when a model is built).

Preprocessing as PaddleX's configs: ResizeImage{resize_short: 256} (OpenCV bilinear), CropImage{size: 224},
ImageNet mean/std.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

# Published parameter counts in millions (Chen et al. 2023, Table 7 / JierunChen/FasterNet; PaddleClas quotes the
# same, with 93.4 for L).
PUBLISHED_PARAMS_M: dict[str, float] = {
    "FasterNet-T0": 3.9,
    "FasterNet-T1": 7.6,
    "FasterNet-T2": 15.0,
    "FasterNet-S": 31.1,
    "FasterNet-M": 53.5,
    "FasterNet-L": 93.5,
}

# (embed_dim, depths, activation) per variant
ARCHS: dict[str, tuple[int, tuple[int, ...], str]] = {
    "FasterNet-T0": (40, (1, 2, 8, 2), "gelu"),
    "FasterNet-T1": (64, (1, 2, 8, 2), "gelu"),
    "FasterNet-T2": (96, (1, 2, 8, 2), "relu"),
    "FasterNet-S": (128, (1, 2, 13, 2), "relu"),
    "FasterNet-M": (144, (3, 4, 18, 3), "relu"),
    "FasterNet-L": (192, (3, 4, 18, 3), "relu"),
}


def _build(name: str) -> Any:
    from hpi.zoo.nets.fasternet import FasterNet
    from hpi.zoo.nets.layers import SoftmaxOutput

    model = SoftmaxOutput(FasterNet(*ARCHS[name]))
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
