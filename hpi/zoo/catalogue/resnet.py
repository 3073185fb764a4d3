"""ResNet family catalogue: PaddleX's ResNet18 ... ResNet152 and ResNet18_vd ... ResNet200_vd.

The architecture lives in :mod:`hpi.zoo.nets.resnet` (imported only when a model is built, so listing the zoo
does not import Paddle). Preprocessing is PaddleX's default:
resize the short side to 256, centre-crop 224, ImageNet mean/std.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

# PaddleClas' published parameter counts in millions (docs/zh_CN/models/ImageNet1k/ResNet.md); trainable
# weights only, BatchNorm running statistics not counted.
PUBLISHED_PARAMS_M: dict[str, float] = {
    "ResNet18": 11.69,
    "ResNet18_vd": 11.71,
    "ResNet34": 21.80,
    "ResNet34_vd": 21.82,
    "ResNet50": 25.56,
    "ResNet50_vd": 25.58,
    "ResNet101": 44.55,
    "ResNet101_vd": 44.57,
    "ResNet152": 60.19,
    "ResNet152_vd": 60.21,
    "ResNet200_vd": 74.74,
}


def _build(depth: int, vd: bool) -> Any:
    from hpi.zoo.nets.resnet import build_classifier

    return build_classifier(depth, vd)


def _zoo_model(name: str) -> ZooModel:
    depth, _, variant = name.removeprefix("ResNet").partition("_")
    return ZooModel(
        name=name,
        build=partial(_build, int(depth), variant == "vd"),
        extra={"published_params_m": PUBLISHED_PARAMS_M[name]},
    )


# The names PaddleX's classification module lists (ResNet200 exists only as ResNet200_vd there).
MODELS: list[ZooModel] = [_zoo_model(name) for name in PUBLISHED_PARAMS_M]
