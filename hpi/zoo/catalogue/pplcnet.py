"""PP-LCNet family catalogue: PaddleX's PP-LCNet_x0_25 ... PP-LCNet_x2_5.

PP-LCNet (Cui et al., 2021, arXiv:2109.15099) is a MobileNetV1-like CPU network; the architecture lives in
:mod:`hpi.zoo.nets.pplcnet` so that listing the zoo does not import Paddle (PicoDet in PP-ShiTuV2_det reuses
its backbone at scale 2.5 with ``return_blocks=(4, 5, 6)``).

Preprocessing is PaddleX's default: resize the short side to 256, centre-crop 224, ImageNet mean/std.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

# PaddleX name suffix -> width multiplier
SCALES = {
    "x0_25": 0.25,
    "x0_35": 0.35,
    "x0_5": 0.5,
    "x0_75": 0.75,
    "x1_0": 1.0,
    "x1_5": 1.5,
    "x2_0": 2.0,
    "x2_5": 2.5,
}


def _build(scale: float) -> Any:
    from hpi.zoo.nets.pplcnet import build_classifier

    return build_classifier(scale)


MODELS: list[ZooModel] = [
    ZooModel(name=f"PP-LCNet_{suffix}", build=partial(_build, scale))
    for suffix, scale in SCALES.items()
]
