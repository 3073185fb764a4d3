"""Swin Transformer family catalogue: PaddleX's SwinTransformer_{tiny,small,base,large}_patch4_window7_224 and
SwinTransformer_{base,large}_patch4_window12_384.

The architecture lives in :mod:`hpi.zoo.nets.swin` (imported only when a model is built); each graph is built for
its input resolution (constant window masks) with a dynamic batch.

Preprocessing: PaddleX's configs declare a PIL bicubic resize of the short side (256 before the 224 crop, 438
before the 384 crop) and ImageNet mean/std; the model card keeps the declared filter, as for PP-HGNet.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

# Published parameter counts in millions, trainable weights: the reference implementation's (Liu et al. 2021,
# microsoft/Swin-Transformer: 28M / 50M / 88M / 197M; exact figures as timm's swin_*_patch4_window*).
# The 384 models have larger relative-position tables (23x23 instead of 13x13 entries per head).
PUBLISHED_PARAMS_M: dict[str, float] = {
    "SwinTransformer_tiny_patch4_window7_224": 28.29,
    "SwinTransformer_small_patch4_window7_224": 49.61,
    "SwinTransformer_base_patch4_window7_224": 87.77,
    "SwinTransformer_base_patch4_window12_384": 87.90,
    "SwinTransformer_large_patch4_window7_224": 196.53,
    "SwinTransformer_large_patch4_window12_384": 196.74,
}

# (embed_dim, depths, num_heads) per size
ARCHS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "large": (192, (2, 2, 18, 2), (6, 12, 24, 48)),
}


def _build(size: str, img_size: int, window: int) -> Any:
    from hpi.zoo.nets.layers import SoftmaxOutput
    from hpi.zoo.nets.swin import SwinTransformer

    embed_dim, depths, num_heads = ARCHS[size]
    model = SoftmaxOutput(SwinTransformer(img_size, embed_dim, depths, num_heads, window))
    model.eval()
    return model


def _zoo_model(name: str) -> ZooModel:
    size, _, window_part, side_part = name.removeprefix("SwinTransformer_").split("_")
    window, side = int(window_part.removeprefix("window")), int(side_part)
    return ZooModel(
        name=name,
        build=partial(_build, size, side, window),
        extra={"published_params_m": PUBLISHED_PARAMS_M[name]},
    )


MODELS: list[ZooModel] = [_zoo_model(name) for name in PUBLISHED_PARAMS_M]
