"""FasterNet (Chen et al., "Run, Don't Walk: Chasing Higher FLOPS for Faster Neural Networks", CVPR 2023), as
PaddleClas builds FasterNet_T0..L.

A 4x4/4 conv-BN patch embedding, four stages of FasterNet blocks separated by 2x2/2 conv-BN patch merging
(channels double), then global average pooling, a bias-free 1x1 conv to 1280 features with the activation, and a
linear classifier. A block is a partial convolution (a 3x3 conv over the first quarter of the channels, the rest
passed through; split + concat) followed by a 1x1 expansion (ratio 2) + BN + activation, a 1x1 projection, and a
residual. All convolutions are bias-free.
"""

from __future__ import annotations

from collections.abc import Sequence

import paddle
from paddle import nn

from hpi.zoo.nets.layers import ConvBNAct, make_act

N_DIV = 4  # the partial convolution touches channels // N_DIV
MLP_RATIO = 2
FEATURE_DIM = 1280


class PartialConv(nn.Layer):
    """3x3 conv over the first ``dim // n_div`` channels; the others pass through unchanged."""

    def __init__(self, dim: int, n_div: int = N_DIV) -> None:
        super().__init__()
        self.conv_channels = dim // n_div
        self.sections = [self.conv_channels, dim - self.conv_channels]
        self.partial_conv3 = nn.Conv2D(self.conv_channels, self.conv_channels, 3, padding=1, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        touched, untouched = paddle.split(x, self.sections, axis=1)
        return paddle.concat([self.partial_conv3(touched), untouched], axis=1)


class FasterNetBlock(nn.Layer):
    """PConv -> 1x1 (expand) + BN + act -> 1x1 (project), plus the input."""

    def __init__(self, dim: int, act: str) -> None:
        super().__init__()
        self.spatial_mixing = PartialConv(dim)
        self.expand = ConvBNAct(dim, dim * MLP_RATIO, 1, act=act)
        self.project = nn.Conv2D(dim * MLP_RATIO, dim, 1, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x + self.project(self.expand(self.spatial_mixing(x)))


class FasterNet(nn.Layer):
    """The FasterNet classifier; returns logits.

    Args:
        embed_dim: channels of the first stage (doubles every stage).
        depths: blocks per stage.
        act: "gelu" (T0, T1) or "relu" (T2 and larger).
        num_classes: classifier outputs.
    """

    def __init__(self, embed_dim: int, depths: Sequence[int], act: str, num_classes: int = 1000) -> None:
        super().__init__()
        self.patch_embed = ConvBNAct(3, embed_dim, 4, stride=4, padding=0, act=None)
        layers: list[nn.Layer] = []
        dim = embed_dim
        for i, depth in enumerate(depths):
            layers.extend(FasterNetBlock(dim, act) for _ in range(depth))
            if i < len(depths) - 1:
                layers.append(ConvBNAct(dim, 2 * dim, 2, stride=2, padding=0, act=None))
                dim *= 2
        self.stages = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2D(1)
        self.head_conv = nn.Conv2D(dim, FEATURE_DIM, 1, bias_attr=False)
        self.head_act = make_act(act)
        self.classifier = nn.Linear(FEATURE_DIM, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.stages(self.patch_embed(x))
        x = self.head_act(self.head_conv(self.avgpool(x)))
        return self.classifier(x.flatten(1))
