"""StarNet (Ma et al., "Rewrite the Stars", CVPR 2024), as PaddleClas builds StarNet_S1..S4.

A 3x3/2 stem (32 channels, ReLU6), four stages, each a 3x3/2 conv-BN downsampler followed by star blocks:
7x7 depthwise conv + BN, two parallel 1x1 expansions ``f1``, ``f2`` (ratio 4) combined by the "star" operation
``relu6(f1(x)) * f2(x)``, a 1x1 projection + BN, a second 7x7 depthwise conv, and a residual. Then BN, global
average pooling and a linear classifier. All convolutions keep their bias, as in the reference implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

import paddle
import paddle.nn.functional as F
from paddle import nn

from hpi.zoo.nets.layers import ConvBNAct

STEM_CHANNELS = 32
MLP_RATIO = 4


class StarBlock(nn.Layer):
    """dwconv-BN -> relu6(f1) * f2 -> 1x1-BN -> dwconv, plus the input."""

    def __init__(self, dim: int, mlp_ratio: int = MLP_RATIO) -> None:
        super().__init__()
        hidden = mlp_ratio * dim
        self.dwconv = ConvBNAct(dim, dim, 7, groups=dim, act=None, bias=True)
        self.f1 = nn.Conv2D(dim, hidden, 1)
        self.f2 = nn.Conv2D(dim, hidden, 1)
        self.g = ConvBNAct(hidden, dim, 1, act=None, bias=True)
        self.dwconv2 = nn.Conv2D(dim, dim, 7, padding=3, groups=dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.dwconv(x)
        y = F.relu6(self.f1(y)) * self.f2(y)
        return x + self.dwconv2(self.g(y))


class StarNet(nn.Layer):
    """The StarNet classifier; returns logits.

    Args:
        base_dim: channels of the first stage (doubles every stage).
        depths: star blocks per stage.
        num_classes: classifier outputs.
    """

    def __init__(self, base_dim: int, depths: Sequence[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, STEM_CHANNELS, 3, stride=2, act="relu6", bias=True)
        stages: list[nn.Layer] = []
        in_channels = STEM_CHANNELS
        for i, depth in enumerate(depths):
            dim = base_dim * 2**i
            downsample = ConvBNAct(in_channels, dim, 3, stride=2, act=None, bias=True)
            stages.append(nn.Sequential(downsample, *[StarBlock(dim) for _ in range(depth)]))
            in_channels = dim
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2D(in_channels)
        self.avgpool = nn.AdaptiveAvgPool2D(1)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.avgpool(self.norm(self.stages(self.stem(x))))
        return self.classifier(x.flatten(1))
