"""ConvNeXt family catalogue: PaddleX's ConvNeXt_tiny / _small / _base_224 / _base_384 / _large_224 / _large_384.

The architecture lives in :mod:`hpi.zoo.nets.convnext` (imported only when a model is built). The 384 models are
the 224 architectures run at 384.

Preprocessing: PaddleX's configs declare a PIL bicubic resize of the short side (256 before the 224 crop, 384
before the 384 crop) and ImageNet mean/std. As for PP-HGNet, the model card keeps the declared filter and
:func:`hpi.zoo.seeding.preprocess_spec` writes what PaddleX's predictor executes.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

# Published parameter counts in millions, trainable weights: the reference implementation's (Liu et al. 2022,
# facebookresearch/ConvNeXt; timm convnext_tiny 28.59, _small 50.22, _base 88.59, _large 197.77). PaddleClas'
# table (28.583 ...) leaves out the layer-scale vectors, which paddle.summary does not see.
PUBLISHED_PARAMS_M: dict[str, float] = {
    "ConvNeXt_tiny": 28.59,
    "ConvNeXt_small": 50.22,
    "ConvNeXt_base_224": 88.59,
    "ConvNeXt_base_384": 88.59,
    "ConvNeXt_large_224": 197.77,
    "ConvNeXt_large_384": 197.77,
}

# (depths, dims) per size
ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}


def _build(size: str) -> Any:
    from hpi.zoo.nets.convnext import ConvNeXt
    from hpi.zoo.nets.layers import SoftmaxOutput

    model = SoftmaxOutput(ConvNeXt(*ARCHS[size]))
    model.eval()
    return model


def _zoo_model(name: str) -> ZooModel:
    size = name.removeprefix("ConvNeXt_").partition("_")[0]
    return ZooModel(
        name=name,
        build=partial(_build, size),
        extra={"published_params_m": PUBLISHED_PARAMS_M[name]},
    )


MODELS: list[ZooModel] = [_zoo_model(name) for name in PUBLISHED_PARAMS_M]
