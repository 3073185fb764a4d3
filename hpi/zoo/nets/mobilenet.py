"""MobileNetV1 (Howard et al., 2017), V2 (Sandler et al., 2018) and V3 (Howard et al., 2019) as PaddleClas builds them.

The PaddleClas variants differ from torchvision's in ways that change the exported graph, so they are kept:

* V1: width multiplier by plain ``int(c * scale)``, BN + ReLU after every conv.
* V2: ReLU6; channels are ``int(c * scale)`` (no rounding to 8); every inverted residual has its 1x1 expansion
  conv, also when the expansion factor is 1; the last conv has ``int(1280 * scale)`` channels above x1.0, else 1280.
* V3: channels rounded with ``make_divisible(.., 8)``; every block has its expansion conv (also when the width
  does not change); the squeeze-excitation bottleneck is ``channels // 4`` with a ReLU and a
  ``hardsigmoid(slope=0.2, offset=0.5)`` gate; the head is global pool, a bias-free 1x1 conv to 1280,
  hardswish, dropout (``downscale_in_infer``), linear. HardSwish exports to ONNX opset >= 14 as ``HardSwish``.

Every network returns logits and exposes its final linear layer as ``.classifier``.
"""

from __future__ import annotations

import paddle
from paddle import nn

from hpi.zoo.nets.layers import (
    ConvBNAct,
    HardSigmoid,
    PooledConvHead,
    SEModule,
    SoftmaxOutput,
    make_divisible,
)

# MobileNetV1 depthwise-separable blocks: (depthwise channels, pointwise output channels, stride), unscaled.
V1_BLOCKS = (
    (32, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 1024, 2),
    (1024, 1024, 1),
)

# MobileNetV2 inverted-residual groups: (expansion t, output channels c, repeats n, first stride s).
V2_GROUPS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# MobileNetV3 blocks: (kernel, expanded channels, output channels, squeeze-excitation, activation, stride).
V3_LARGE = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
)
V3_SMALL = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2),
    (5, 240, 40, True, "hardswish", 1),
    (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1),
    (5, 144, 48, True, "hardswish", 1),
    (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1),
    (5, 576, 96, True, "hardswish", 1),
)
# size -> (block table, channels of the conv before pooling, before scaling)
V3_CONFIGS = {"large": (V3_LARGE, 960), "small": (V3_SMALL, 576)}
V3_STEM_CHANNELS = 16
V3_HEAD_CHANNELS = 1280  # the 1x1 conv after pooling; not scaled


class MobileNetV1(nn.Layer):
    """3x3/2 stem, 13 depthwise-separable blocks (3x3 depthwise, 1x1 pointwise), pool, linear (logits)."""

    def __init__(self, scale: float, num_classes: int = 1000) -> None:
        super().__init__()
        stem = int(32 * scale)
        self.conv = ConvBNAct(3, stem, 3, 2, act="relu")
        blocks = []
        in_channels = stem
        for dw, pw, stride in V1_BLOCKS:
            dw_c, pw_c = int(dw * scale), int(pw * scale)
            blocks.append(
                nn.Sequential(
                    ConvBNAct(in_channels, dw_c, 3, stride, groups=dw_c, act="relu"),
                    ConvBNAct(dw_c, pw_c, 1, 1, act="relu"),
                )
            )
            in_channels = pw_c
        self.blocks = nn.Sequential(*blocks)
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten(start_axis=1, stop_axis=-1)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.classifier(self.flatten(self.avg_pool(self.blocks(self.conv(x)))))


class InvertedResidual(nn.Layer):
    """MobileNetV2 block: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection, optional residual."""

    def __init__(
        self, in_channels: int, out_channels: int, expansion: int, stride: int, residual: bool
    ) -> None:
        super().__init__()
        mid = int(round(in_channels * expansion))
        self.expand_conv = ConvBNAct(in_channels, mid, 1, 1, act="relu6")
        self.dw_conv = ConvBNAct(mid, mid, 3, stride, groups=mid, act="relu6")
        self.linear_conv = ConvBNAct(mid, out_channels, 1, 1, act=None)
        self.residual = residual

    def forward(self, x):
        y = self.linear_conv(self.dw_conv(self.expand_conv(x)))
        return paddle.add(x, y) if self.residual else y


class MobileNetV2(nn.Layer):
    """3x3/2 stem, 17 inverted residuals, 1x1 conv to 1280 (more above x1.0), pool, linear (logits)."""

    def __init__(self, scale: float, num_classes: int = 1000) -> None:
        super().__init__()
        in_channels = int(32 * scale)
        self.conv = ConvBNAct(3, in_channels, 3, 2, act="relu6")
        blocks = []
        for t, c, n, s in V2_GROUPS:
            out_channels = int(c * scale)
            for i in range(n):
                blocks.append(
                    InvertedResidual(in_channels, out_channels, t, s if i == 0 else 1, residual=i > 0)
                )
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        last = int(1280 * scale) if scale > 1.0 else 1280
        self.last_conv = ConvBNAct(in_channels, last, 1, 1, act="relu6")
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten(start_axis=1, stop_axis=-1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        x = self.last_conv(self.blocks(self.conv(x)))
        return self.classifier(self.flatten(self.avg_pool(x)))


class ResidualUnit(nn.Layer):
    """MobileNetV3 block: 1x1 expand, KxK depthwise, optional SE, 1x1 linear projection, residual if shapes allow."""

    def __init__(
        self,
        in_channels: int,
        mid: int,
        out_channels: int,
        kernel: int,
        stride: int,
        use_se: bool,
        act: str,
    ) -> None:
        super().__init__()
        self.expand_conv = ConvBNAct(in_channels, mid, 1, 1, act=act)
        self.dw_conv = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act)
        self.se = (
            SEModule(mid, reduction=4, act="relu", gate=HardSigmoid(slope=0.2, offset=0.5))
            if use_se
            else nn.Identity()
        )
        self.linear_conv = ConvBNAct(mid, out_channels, 1, 1, act=None)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        y = self.linear_conv(self.se(self.dw_conv(self.expand_conv(x))))
        return paddle.add(x, y) if self.residual else y


class MobileNetV3(nn.Layer):
    """3x3/2 hard-swish stem, the block table of ``size``, 1x1 conv, pooled 1280-d head, linear (logits)."""

    def __init__(self, size: str, scale: float, num_classes: int = 1000) -> None:
        super().__init__()
        table, squeeze = V3_CONFIGS[size]
        in_channels = make_divisible(V3_STEM_CHANNELS * scale)
        self.conv = ConvBNAct(3, in_channels, 3, 2, act="hardswish")
        blocks = []
        for kernel, exp, c, se, act, stride in table:
            out_channels = make_divisible(c * scale)
            blocks.append(
                ResidualUnit(in_channels, make_divisible(exp * scale), out_channels, kernel, stride, se, act)
            )
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        last = make_divisible(squeeze * scale)
        self.last_second_conv = ConvBNAct(in_channels, last, 1, 1, act="hardswish")
        self.head = PooledConvHead(last, V3_HEAD_CHANNELS, num_classes, act="hardswish", dropout=0.2)

    @property
    def classifier(self) -> nn.Linear:
        """The final linear layer (it lives in ``head``; a property so that it is registered once)."""
        return self.head.classifier

    def forward(self, x):
        return self.head(self.last_second_conv(self.blocks(self.conv(x))))


def build_classifier(version: int, scale: float, size: str | None = None) -> nn.Layer:
    """MobileNetV``version`` (``size`` "large"/"small" for V3) with PaddleClas' exported softmax, in eval mode.

    Raises:
        ValueError: an unknown version or V3 size; the message lists the known ones.
    """
    if version == 1:
        net: nn.Layer = MobileNetV1(scale)
    elif version == 2:
        net = MobileNetV2(scale)
    elif version == 3:
        if size not in V3_CONFIGS:
            raise ValueError(f"MobileNetV3 size {size!r} is not supported; known: {', '.join(V3_CONFIGS)}")
        net = MobileNetV3(size, scale)
    else:
        raise ValueError(f"MobileNet version {version!r} is not supported; known: 1, 2, 3")
    model = SoftmaxOutput(net)
    model.eval()
    return model
