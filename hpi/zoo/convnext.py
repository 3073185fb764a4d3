"""ConvNeXt family: PaddleX's ConvNeXt_tiny / _small / _base_224 / _base_384 / _large_224 / _large_384.

Preprocessing as PaddleX's configs for these models: resize the short side with PIL bicubic (256 -> crop 224, or
384 -> crop 384 for the 384 variants), ImageNet mean/std. The 384 models are the 224 architectures run at 384.
"""

from __future__ import annotations

from functools import partial

from hpi.zoo.registry import ZooModel

# PaddleX resizes these models with PIL's bicubic filter (ResizeImage{interpolation: bicubic, backend: pil}).
PIL_BICUBIC = {"interpolation": "BICUBIC", "resize_backend": "pil"}

_TINY = ((3, 3, 9, 3), (96, 192, 384, 768))
_SMALL = ((3, 3, 27, 3), (96, 192, 384, 768))
_BASE = ((3, 3, 27, 3), (128, 256, 512, 1024))
_LARGE = ((3, 3, 27, 3), (192, 384, 768, 1536))


def _build(depths: tuple[int, ...], dims: tuple[int, ...]):
    from hpi.zoo.layers import SoftmaxOutput
    from hpi.zoo.nets.convnext import ConvNeXt

    model = SoftmaxOutput(ConvNeXt(depths, dims))
    model.eval()
    return model


def _model(name: str, arch: tuple[tuple[int, ...], tuple[int, ...]], size: int) -> ZooModel:
    return ZooModel(
        name=name,
        family="ConvNeXt",
        build=partial(_build, *arch),
        input_size=size,
        resize_short=256 if size == 224 else size,
        extra=dict(PIL_BICUBIC),
    )


MODELS: list[ZooModel] = [
    _model("ConvNeXt_tiny", _TINY, 224),
    _model("ConvNeXt_small", _SMALL, 224),
    _model("ConvNeXt_base_224", _BASE, 224),
    _model("ConvNeXt_base_384", _BASE, 384),
    _model("ConvNeXt_large_224", _LARGE, 224),
    _model("ConvNeXt_large_384", _LARGE, 384),
]
