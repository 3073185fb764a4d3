"""ConvNeXt (Liu et al., "A ConvNet for the 2020s", 2022), laid out as PaddleClas exports it.

A 4x4/4 patchify stem, four stages of inverted-bottleneck blocks (7x7 depthwise conv, LayerNorm, 4x MLP with
GELU, layer scale) separated by LayerNorm + 2x2/2 downsampling convolutions, global average pooling, LayerNorm
and a linear classifier. The block runs its MLP channels-last (transpose, Linear, transpose back) and the stem /
downsampling LayerNorms normalise over the channel axis of NCHW with explicit mean/variance arithmetic, which is
the operator mix of PaddleClas' inference graphs.
"""

from __future__ import annotations

from collections.abc import Sequence

import paddle
from paddle import nn


class ChannelLayerNorm(nn.Layer):
    """LayerNorm over the channel axis of an NCHW tensor (ConvNeXt's "channels_first" LayerNorm)."""

    def __init__(self, channels: int, epsilon: float = 1e-6) -> None:
        super().__init__()
        self.weight = self.create_parameter([channels], default_initializer=nn.initializer.Constant(1.0))
        self.bias = self.create_parameter([channels], default_initializer=nn.initializer.Constant(0.0))
        self.epsilon = epsilon

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        mean = x.mean(axis=1, keepdim=True)
        var = (x - mean).pow(2).mean(axis=1, keepdim=True)
        x = (x - mean) / paddle.sqrt(var + self.epsilon)
        return x * self.weight.reshape([1, -1, 1, 1]) + self.bias.reshape([1, -1, 1, 1])


class ConvNeXtBlock(nn.Layer):
    """7x7 depthwise conv, then LayerNorm -> Linear(4C) -> GELU -> Linear(C) channels-last, scaled, residual."""

    def __init__(self, dim: int, layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2D(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, epsilon=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale = self.create_parameter(
            [dim], default_initializer=nn.initializer.Constant(layer_scale_init)
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.dwconv(x).transpose([0, 2, 3, 1])
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = (self.layer_scale * y).transpose([0, 3, 1, 2])
        return x + y


class ConvNeXt(nn.Layer):
    """The ConvNeXt classifier; returns logits.

    Args:
        depths: blocks per stage, e.g. (3, 3, 9, 3) for ConvNeXt-T.
        dims: channels per stage, e.g. (96, 192, 384, 768).
        num_classes: classifier outputs.
    """

    def __init__(self, depths: Sequence[int], dims: Sequence[int], num_classes: int = 1000) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt has 4 stages; got depths={list(depths)}, dims={list(dims)}")
        self.downsample_layers = nn.LayerList(
            [nn.Sequential(nn.Conv2D(3, dims[0], 4, stride=4), ChannelLayerNorm(dims[0]))]
            + [
                nn.Sequential(ChannelLayerNorm(dims[i]), nn.Conv2D(dims[i], dims[i + 1], 2, stride=2))
                for i in range(3)
            ]
        )
        self.stages = nn.LayerList(
            [nn.Sequential(*[ConvNeXtBlock(dims[i]) for _ in range(depths[i])]) for i in range(4)]
        )
        self.norm = nn.LayerNorm(dims[-1], epsilon=1e-6)
        self.classifier = nn.Linear(dims[-1], num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for i in range(4):  # indexing, not zip: dy2static cannot convert zip(..., strict=True)
            x = self.stages[i](self.downsample_layers[i](x))
        return self.classifier(self.norm(x.mean(axis=[2, 3])))
