"""MobileNetV4 (Qin et al., "MobileNetV4: Universal Models for the Mobile Ecosystem", 2024), as PaddleClas builds
MobileNetV4_conv_{small,medium,large} and MobileNetV4_hybrid_{medium,large}.

Block kinds (one row of a config each):

* ``("cn", out, k, stride)``: conv k x k + BN + act.
* ``("er", out, mid, k, stride)``: fused inverted bottleneck ("edge residual"): k x k conv to ``mid`` + BN + act,
  1x1 conv + BN; residual when shapes allow.
* ``("uir", out, mid, k_start, k_mid, stride)``: universal inverted bottleneck: optional depthwise k_start x
  k_start + BN, 1x1 expansion + BN + act, optional depthwise k_mid x k_mid + BN + act (carries the stride), 1x1
  projection + BN, optional layer scale; residual when shapes allow. A kernel of 0 means "absent".
* ``("mqa", out, key_dim, k, heads, kv_stride)``: mobile multi-query attention: BN, a multi-head query (1x1
  conv), one shared key and value head (1x1 convs, after a k x k/kv_stride depthwise conv + BN when kv_stride
  > 1), softmax attention, 1x1 output projection, layer scale, residual.

Then global average pooling, a 1x1 conv-BN-act "head" to 1280 channels, and a linear classifier. The hybrid models
use layer scale (init 1e-5) in their UIR and attention blocks; hybrid-large uses GELU throughout.
"""

from __future__ import annotations

from collections.abc import Sequence

import paddle
import paddle.nn.functional as F
from paddle import nn

from hpi.zoo.nets.layers import ConvBNAct

HEAD_CHANNELS = 1280
BlockSpec = tuple  # ("cn" | "er" | "uir" | "mqa", out_channels, ...) as described in the module docstring


class LayerScale2D(nn.Layer):
    """Per-channel learned scale of an NCHW tensor."""

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.layer_scale = self.create_parameter(
            [channels], default_initializer=nn.initializer.Constant(init)
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x * self.layer_scale.reshape([1, -1, 1, 1])


class EdgeResidual(nn.Layer):
    """k x k conv (expand) + BN + act, 1x1 conv + BN; residual when stride 1 and in == out."""

    def __init__(self, in_channels: int, out_channels: int, mid: int, k: int, stride: int, act: str) -> None:
        super().__init__()
        self.residual = stride == 1 and in_channels == out_channels
        self.conv_exp = ConvBNAct(in_channels, mid, k, stride=stride, act=act)
        self.conv_pwl = ConvBNAct(mid, out_channels, 1, act=None)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.conv_pwl(self.conv_exp(x))
        return x + y if self.residual else y


class UniversalInvertedResidual(nn.Layer):
    """[dw k_start + BN] -> 1x1 + BN + act -> [dw k_mid + BN + act] -> 1x1 + BN -> [layer scale] (+ input)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid: int,
        k_start: int,
        k_mid: int,
        stride: int,
        act: str,
        layer_scale: float,
    ) -> None:
        super().__init__()
        self.residual = stride == 1 and in_channels == out_channels
        # the stride sits on the middle depthwise conv; without one, on the starting one
        start_stride = 1 if k_mid else stride
        if stride > 1 and not (k_start or k_mid):
            raise ValueError("a strided universal inverted bottleneck needs a depthwise convolution")
        self.dw_start = (
            ConvBNAct(in_channels, in_channels, k_start, stride=start_stride, groups=in_channels, act=None)
            if k_start
            else nn.Identity()
        )
        self.pw_exp = ConvBNAct(in_channels, mid, 1, act=act)
        self.dw_mid = (
            ConvBNAct(mid, mid, k_mid, stride=stride, groups=mid, act=act) if k_mid else nn.Identity()
        )
        self.pw_proj = ConvBNAct(mid, out_channels, 1, act=None)
        self.scale = LayerScale2D(out_channels, layer_scale) if layer_scale > 0 else nn.Identity()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.scale(self.pw_proj(self.dw_mid(self.pw_exp(self.dw_start(x)))))
        return x + y if self.residual else y


class MobileMultiQueryAttention(nn.Layer):
    """Multi-query attention on a feature map: ``heads`` query heads, one key head and one value head.

    The attention scale is ``(heads * key_dim) ** -0.5`` as in PaddleClas (the paper's reference uses
    ``key_dim ** -0.5``); the operators are the same either way.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        key_dim: int,
        k: int,
        heads: int,
        kv_stride: int,
        layer_scale: float,
    ) -> None:
        super().__init__()
        self.residual = in_channels == out_channels
        self.heads, self.key_dim = heads, key_dim
        self.scale = (heads * key_dim) ** -0.5
        self.norm = nn.BatchNorm2D(in_channels)
        self.query_proj = nn.Conv2D(in_channels, heads * key_dim, 1, bias_attr=False)
        if kv_stride > 1:
            self.key_down_proj = ConvBNAct(
                in_channels, in_channels, k, stride=kv_stride, groups=in_channels, act=None
            )
            self.value_down_proj = ConvBNAct(
                in_channels, in_channels, k, stride=kv_stride, groups=in_channels, act=None
            )
        else:
            self.key_down_proj = nn.Identity()
            self.value_down_proj = nn.Identity()
        self.key_proj = nn.Conv2D(in_channels, key_dim, 1, bias_attr=False)
        self.value_proj = nn.Conv2D(in_channels, key_dim, 1, bias_attr=False)
        self.proj = nn.Conv2D(heads * key_dim, out_channels, 1, bias_attr=False)
        self.layer_scale = LayerScale2D(out_channels, layer_scale) if layer_scale > 0 else nn.Identity()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        _, _, h, w = x.shape
        y = self.norm(x)
        q = self.query_proj(y).reshape([0, self.heads, self.key_dim, h * w])  # (B, heads, d, HW)
        k = self.key_proj(self.key_down_proj(y)).flatten(2).unsqueeze(1)  # (B, 1, d, HW')
        v = self.value_proj(self.value_down_proj(y)).flatten(2).unsqueeze(1)  # (B, 1, d, HW')
        attn = F.softmax(paddle.matmul(q * self.scale, k, transpose_x=True), axis=-1)  # (B, heads, HW, HW')
        out = paddle.matmul(v, attn, transpose_y=True)  # (B, heads, d, HW)
        out = self.layer_scale(self.proj(out.reshape([0, self.heads * self.key_dim, h, w])))
        return x + out if self.residual else out


class MobileNetV4(nn.Layer):
    """The MobileNetV4 classifier; returns logits.

    Args:
        blocks: block rows (see the module docstring).
        stem_channels: output channels of the 3x3/2 stem.
        act: activation of the whole network ("relu" or "gelu").
        layer_scale: initial layer scale of UIR and attention blocks (0: no layer scale).
        num_classes: classifier outputs.
    """

    def __init__(
        self,
        blocks: Sequence[BlockSpec],
        stem_channels: int,
        act: str = "relu",
        layer_scale: float = 0.0,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.conv_stem = ConvBNAct(3, stem_channels, 3, stride=2, act=act)
        layers: list[nn.Layer] = []
        channels = stem_channels
        for spec in blocks:
            kind, out = spec[0], spec[1]
            if kind == "cn":
                _, _, k, stride = spec
                layers.append(ConvBNAct(channels, out, k, stride=stride, act=act))
            elif kind == "er":
                _, _, mid, k, stride = spec
                layers.append(EdgeResidual(channels, out, mid, k, stride, act))
            elif kind == "uir":
                _, _, mid, k_start, k_mid, stride = spec
                layers.append(
                    UniversalInvertedResidual(channels, out, mid, k_start, k_mid, stride, act, layer_scale)
                )
            elif kind == "mqa":
                _, _, key_dim, k, heads, kv_stride = spec
                layers.append(
                    MobileMultiQueryAttention(channels, out, key_dim, k, heads, kv_stride, layer_scale)
                )
            else:
                raise ValueError(
                    f"unknown MobileNetV4 block kind {kind!r} in {spec!r}; known: cn, er, uir, mqa"
                )
            channels = out
        self.blocks = nn.Sequential(*layers)
        self.global_pool = nn.AdaptiveAvgPool2D(1)
        self.conv_head = ConvBNAct(channels, HEAD_CHANNELS, 1, act=act)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.conv_head(self.global_pool(self.blocks(self.conv_stem(x))))
        return self.classifier(x.flatten(1))
