"""CLIP ViT family catalogue: PaddleX's CLIP_vit_base_patch16_224 and CLIP_vit_large_patch14_224 (CLIP image
encoders with a linear ImageNet-1k head).

The architecture lives in :mod:`hpi.zoo.nets.clip_vit` (imported only when a model is built).

Preprocessing: PaddleX's configs for these two models (``paddlex/repo_apis/PaddleClas_api/configs``) do *not* use
CLIP's own normalisation (mean 0.4815/0.4578/0.4082, std 0.2686/0.2613/0.2758, bicubic resize to 224): their
``Infer.transforms`` are the ImageNet defaults, ResizeImage{resize_short: 256} with OpenCV's bilinear filter,
CropImage{size: 224}, ImageNet mean/std. The exported ``inference.yml`` follows those transforms, so the zoo does
too (no mean/std/interpolation overrides in ``extra``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from hpi.zoo.record import ZooModel

# Published parameter counts in millions: timm's vit_base_patch16_clip_224.openai_ft_in1k (86.57) and
# vit_large_patch14_clip_224.openai_ft_in1k (304.2), the same encoders with a 1000-class head. PaddleClas' CLIP
# models also hold the CLIP projection matrix (768x512 / 1024x768), which the classification graph never uses.
PUBLISHED_PARAMS_M: dict[str, float] = {
    "CLIP_vit_base_patch16_224": 86.57,
    "CLIP_vit_large_patch14_224": 304.20,
}

# (patch_size, dim, depth, num_heads, head_token); head_token as PaddleClas (see hpi.zoo.nets.clip_vit)
ARCHS: dict[str, tuple[int, int, int, int, int]] = {
    "CLIP_vit_base_patch16_224": (16, 768, 12, 12, 1),
    "CLIP_vit_large_patch14_224": (14, 1024, 24, 16, 0),
}


def _build(name: str) -> Any:
    from hpi.zoo.nets.clip_vit import ClipVisionTransformer
    from hpi.zoo.nets.layers import SoftmaxOutput

    patch_size, dim, depth, num_heads, head_token = ARCHS[name]
    model = SoftmaxOutput(ClipVisionTransformer(224, patch_size, dim, depth, num_heads, head_token))
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
