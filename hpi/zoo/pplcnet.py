"""PP-LCNet family catalogue: PaddleX's PP-LCNet_x0_25 ... PP-LCNet_x2_5.

PP-LCNet (Cui et al., 2021, arXiv:2109.15099) is a MobileNetV1-like CPU network; the architecture lives in
:mod:`hpi.zoo.nets.pplcnet` so that listing the zoo does not import Paddle. Its classes are re-exported here
on first access, so ``from hpi.zoo.pplcnet import PPLCNetBackbone`` works (PicoDet in PP-ShiTuV2_det reuses
the backbone at scale 2.5 with ``return_blocks=(4, 5, 6)``).

Preprocessing is PaddleX's default: resize the short side to 256, centre-crop 224, ImageNet mean/std.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.registry import ZooModel

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

_NET_EXPORTS = ("BLOCKS", "DepthwiseSeparable", "PPLCNet", "PPLCNetBackbone", "build_classifier")


def _build(scale: float) -> Any:
    from hpi.zoo.nets.pplcnet import build_classifier

    return build_classifier(scale)


def __getattr__(name: str) -> Any:
    """Re-export the network classes lazily (they import Paddle)."""
    if name in _NET_EXPORTS:
        from hpi.zoo.nets import pplcnet

        return getattr(pplcnet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MODELS: list[ZooModel] = [
    ZooModel(name=f"PP-LCNet_{suffix}", family="PP-LCNet", build=partial(_build, scale))
    for suffix, scale in SCALES.items()
]
