"""MobileNet family catalogue: PaddleX's MobileNetV1, V2 and V3 (large, small) at every published scale.

The architectures live in :mod:`hpi.zoo.nets.mobilenet` (imported only when a model is built, so listing the
zoo does not import Paddle). Preprocessing is PaddleX's
default: resize the short side to 256, centre-crop 224, ImageNet mean/std.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

V1_SCALES = (0.25, 0.5, 0.75, 1.0)
V2_SCALES = (0.25, 0.5, 1.0, 1.5, 2.0)
V3_SCALES = (0.35, 0.5, 0.75, 1.0, 1.25)

# PaddleClas' published parameter counts in millions (docs/zh_CN/models/ImageNet1k/MobileNetV{1,2,3}.md).
# The V1 and V2 figures are 1-2% below the weights of PaddleClas' own code (V1 x1.0: its convolution and
# linear weights alone are 4.21M), apparently quoted from the papers; V3 matches to 0.4%.
PUBLISHED_PARAMS_M: dict[str, float] = {
    "MobileNetV1_x0_25": 0.46,
    "MobileNetV1_x0_5": 1.31,
    "MobileNetV1_x0_75": 2.55,
    "MobileNetV1_x1_0": 4.19,
    "MobileNetV2_x0_25": 1.50,
    "MobileNetV2_x0_5": 1.93,
    "MobileNetV2_x1_0": 3.44,
    "MobileNetV2_x1_5": 6.76,
    "MobileNetV2_x2_0": 11.13,
    "MobileNetV3_large_x0_35": 2.10,
    "MobileNetV3_large_x0_5": 2.67,
    "MobileNetV3_large_x0_75": 3.91,
    "MobileNetV3_large_x1_0": 5.47,
    "MobileNetV3_large_x1_25": 7.44,
    "MobileNetV3_small_x0_35": 1.66,
    "MobileNetV3_small_x0_5": 1.90,
    "MobileNetV3_small_x0_75": 2.37,
    "MobileNetV3_small_x1_0": 2.94,
    "MobileNetV3_small_x1_25": 3.62,
}


def _build(version: int, scale: float, size: str | None) -> Any:
    from hpi.zoo.nets.mobilenet import build_classifier

    return build_classifier(version, scale, size)


def scale_tag(scale: float) -> str:
    """PaddleX's spelling of a width multiplier: 0.25 -> "x0_25", 1.0 -> "x1_0"."""
    whole, _, frac = f"{scale:g}".partition(".")
    return f"x{whole}_{frac or '0'}"


def _zoo_model(version: int, scale: float, size: str | None = None) -> ZooModel:
    name = f"MobileNetV{version}_{size + '_' if size else ''}{scale_tag(scale)}"
    return ZooModel(
        name=name,
        build=partial(_build, version, scale, size),
        extra={"published_params_m": PUBLISHED_PARAMS_M[name]},
    )


# The names and scales PaddleX's classification module lists.
MODELS: list[ZooModel] = (
    [_zoo_model(1, s) for s in V1_SCALES]
    + [_zoo_model(2, s) for s in V2_SCALES]
    + [_zoo_model(3, s, size) for size in ("large", "small") for s in V3_SCALES]
)
