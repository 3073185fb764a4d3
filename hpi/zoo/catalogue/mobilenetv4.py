"""MobileNetV4 family: PaddleX's MobileNetV4_conv_small / _conv_medium / _conv_large / _hybrid_medium /
_hybrid_large.

Block rows follow the paper's architecture tables (arXiv 2404.10518, Tables 11-15) in the notation of
:mod:`hpi.zoo.nets.mobilenetv4`: ``("cn", out, k, stride)``, ``("er", out, mid, k, stride)``,
``("uir", out, mid, k_start, k_mid, stride)`` (0 = no depthwise conv there), ``("mqa", out, key_dim, k, heads,
kv_stride)``.

Preprocessing as PaddleX's configs: OpenCV bilinear resize of the short side, centre crop, ImageNet mean/std; the
conv models and hybrid-medium use their training resolutions (256 -> 224 for the conv models, 256 -> 256 for
hybrid-medium, 448 -> 448 for hybrid-large).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

# Published parameter counts in millions: PaddleClas' table (docs/zh_CN/models/ImageNet1k/MobileNetV4.md), equal to
# timm's mobilenetv4_* figures. The paper's Table 7 rounds differently (3.8 / 9.2 / 31 / 10.5 / 35.9).
PUBLISHED_PARAMS_M: dict[str, float] = {
    "MobileNetV4_conv_small": 3.77,
    "MobileNetV4_conv_medium": 9.72,
    "MobileNetV4_conv_large": 32.59,
    "MobileNetV4_hybrid_medium": 11.07,
    "MobileNetV4_hybrid_large": 37.76,
}


def _rep(n: int, *rows: tuple) -> tuple[tuple, ...]:
    """``rows`` repeated ``n`` times, in order."""
    return rows * n


_CONV_SMALL = (
    # 112x112 -> 56x56: plain convolutions
    ("cn", 32, 3, 2),
    ("cn", 32, 1, 1),
    ("cn", 96, 3, 2),
    ("cn", 64, 1, 1),
    # -> 28x28
    ("uir", 96, 192, 5, 5, 2),
    *_rep(4, ("uir", 96, 192, 0, 3, 1)),
    ("uir", 96, 384, 3, 0, 1),
    # -> 14x14
    ("uir", 128, 576, 3, 3, 2),
    ("uir", 128, 512, 5, 5, 1),
    ("uir", 128, 512, 0, 5, 1),
    ("uir", 128, 384, 0, 5, 1),
    *_rep(2, ("uir", 128, 512, 0, 3, 1)),
    ("cn", 960, 1, 1),
)

_CONV_MEDIUM = (
    ("er", 48, 128, 3, 2),
    # -> 56x56
    ("uir", 80, 192, 3, 5, 2),
    ("uir", 80, 160, 3, 3, 1),
    # -> 28x28
    ("uir", 160, 480, 3, 5, 2),
    *_rep(2, ("uir", 160, 640, 3, 3, 1)),
    ("uir", 160, 640, 3, 5, 1),
    ("uir", 160, 640, 3, 3, 1),
    ("uir", 160, 640, 3, 0, 1),
    ("uir", 160, 320, 0, 0, 1),
    ("uir", 160, 640, 3, 0, 1),
    # -> 14x14
    ("uir", 256, 960, 5, 5, 2),
    ("uir", 256, 1024, 5, 5, 1),
    *_rep(2, ("uir", 256, 1024, 3, 5, 1)),
    ("uir", 256, 1024, 0, 0, 1),
    ("uir", 256, 1024, 3, 0, 1),
    ("uir", 256, 512, 3, 5, 1),
    ("uir", 256, 1024, 5, 5, 1),
    *_rep(2, ("uir", 256, 1024, 0, 0, 1)),
    ("uir", 256, 512, 5, 0, 1),
    ("cn", 960, 1, 1),
)

_LARGE_STEM_TO_28 = (
    ("er", 48, 96, 3, 2),
    # -> 56x56
    ("uir", 96, 192, 3, 5, 2),
    ("uir", 96, 384, 3, 3, 1),
    # -> 28x28
    ("uir", 192, 384, 3, 5, 2),
    *_rep(3, ("uir", 192, 768, 3, 3, 1)),
    ("uir", 192, 768, 3, 5, 1),
)

_CONV_LARGE = (
    *_LARGE_STEM_TO_28,
    *_rep(5, ("uir", 192, 768, 5, 3, 1)),
    ("uir", 192, 768, 3, 0, 1),
    # -> 14x14
    ("uir", 512, 768, 5, 5, 2),
    *_rep(3, ("uir", 512, 2048, 5, 5, 1)),
    ("uir", 512, 2048, 5, 0, 1),
    ("uir", 512, 2048, 5, 3, 1),
    *_rep(2, ("uir", 512, 2048, 5, 0, 1)),
    ("uir", 512, 2048, 5, 3, 1),
    ("uir", 512, 2048, 5, 5, 1),
    *_rep(3, ("uir", 512, 2048, 5, 0, 1)),
    ("cn", 960, 1, 1),
)

_MQA_MEDIUM_28 = ("mqa", 160, 64, 3, 4, 2)
_MQA_MEDIUM_14 = ("mqa", 256, 64, 3, 4, 1)
_HYBRID_MEDIUM = (
    ("er", 48, 128, 3, 2),
    # -> 56x56
    ("uir", 80, 192, 3, 5, 2),
    ("uir", 80, 160, 3, 3, 1),
    # -> 28x28
    ("uir", 160, 480, 3, 5, 2),
    ("uir", 160, 320, 0, 0, 1),
    ("uir", 160, 640, 3, 3, 1),
    ("uir", 160, 640, 3, 5, 1),
    _MQA_MEDIUM_28,
    ("uir", 160, 640, 3, 3, 1),
    _MQA_MEDIUM_28,
    ("uir", 160, 640, 3, 0, 1),
    _MQA_MEDIUM_28,
    ("uir", 160, 640, 3, 3, 1),
    _MQA_MEDIUM_28,
    ("uir", 160, 640, 3, 0, 1),
    # -> 14x14
    ("uir", 256, 960, 5, 5, 2),
    ("uir", 256, 1024, 5, 5, 1),
    *_rep(2, ("uir", 256, 1024, 3, 5, 1)),
    ("uir", 256, 512, 0, 0, 1),
    ("uir", 256, 512, 3, 5, 1),
    ("uir", 256, 512, 0, 0, 1),
    ("uir", 256, 1024, 0, 0, 1),
    _MQA_MEDIUM_14,
    ("uir", 256, 1024, 3, 0, 1),
    _MQA_MEDIUM_14,
    ("uir", 256, 1024, 5, 5, 1),
    _MQA_MEDIUM_14,
    ("uir", 256, 1024, 5, 0, 1),
    _MQA_MEDIUM_14,
    ("uir", 256, 1024, 5, 0, 1),
    ("cn", 960, 1, 1),
)

_MQA_LARGE_28 = ("mqa", 192, 48, 3, 8, 2)
_MQA_LARGE_14 = ("mqa", 512, 64, 3, 8, 1)
_HYBRID_LARGE = (
    *_LARGE_STEM_TO_28,
    *_rep(2, ("uir", 192, 768, 5, 3, 1)),
    *_rep(3, _MQA_LARGE_28, ("uir", 192, 768, 5, 3, 1)),
    _MQA_LARGE_28,
    ("uir", 192, 768, 3, 0, 1),
    # -> 14x14
    ("uir", 512, 768, 5, 5, 2),
    *_rep(3, ("uir", 512, 2048, 5, 5, 1)),
    ("uir", 512, 2048, 5, 0, 1),
    ("uir", 512, 2048, 5, 3, 1),
    *_rep(2, ("uir", 512, 2048, 5, 0, 1)),
    ("uir", 512, 2048, 5, 3, 1),
    ("uir", 512, 2048, 5, 5, 1),
    *_rep(4, _MQA_LARGE_14, ("uir", 512, 2048, 5, 0, 1)),
    ("cn", 960, 1, 1),
)

# name: (blocks, stem channels, activation, layer scale, input size, resize_short)
ARCHS: dict[str, tuple[tuple[tuple, ...], int, str, float, int, int]] = {
    "MobileNetV4_conv_small": (_CONV_SMALL, 32, "relu", 0.0, 224, 256),
    "MobileNetV4_conv_medium": (_CONV_MEDIUM, 32, "relu", 0.0, 224, 256),
    "MobileNetV4_conv_large": (_CONV_LARGE, 24, "relu", 0.0, 224, 256),
    "MobileNetV4_hybrid_medium": (_HYBRID_MEDIUM, 32, "relu", 1e-5, 256, 256),
    "MobileNetV4_hybrid_large": (_HYBRID_LARGE, 24, "gelu", 1e-5, 448, 448),
}


def _build(name: str) -> Any:
    from hpi.zoo.nets.layers import SoftmaxOutput
    from hpi.zoo.nets.mobilenetv4 import MobileNetV4

    blocks, stem, act, layer_scale, _, _ = ARCHS[name]
    model = SoftmaxOutput(MobileNetV4(blocks, stem, act=act, layer_scale=layer_scale))
    model.eval()
    return model


MODELS: list[ZooModel] = [
    ZooModel(
        name=name,
        build=partial(_build, name),
        extra={"published_params_m": PUBLISHED_PARAMS_M[name]},
    )
    for name, arch in ARCHS.items()
]
