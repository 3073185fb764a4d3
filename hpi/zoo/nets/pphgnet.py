"""PP-HGNet (PaddleClas, 2022): "High-performance GPU Net", a VoVNet-style network tuned for GPU latency.

Stem of three 3x3 conv-BN-ReLU (the first at stride 2) and a 3x3 max-pool; four stages, each opened (except the
first) by a learnable depthwise 3x3 stride-2 downsampling conv; each HG block runs ``layer_num`` 3x3 convs in
sequence, concatenates the input with every intermediate output (one-shot aggregation), squeezes with a 1x1
conv and reweights channels with effective SE (one 1x1 conv and a sigmoid); blocks after the first in a stage
add an identity shortcut. Head: global pool, 1x1 conv to 2048, ReLU, dropout, linear.
"""

from __future__ import annotations

from dataclasses import dataclass

import paddle
from paddle import nn

from hpi.zoo.nets.layers import ConvBNAct, PooledConvHead, SoftmaxOutput


@dataclass(frozen=True)
class HGStageSpec:
    """One PP-HGNet stage."""

    in_channels: int
    mid_channels: int  # width of each 3x3 conv inside a block
    out_channels: int
    num_blocks: int
    downsample: bool  # depthwise 3x3 stride-2 conv (BN, no activation) before the blocks


@dataclass(frozen=True)
class HGNetSpec:
    """A PP-HGNet size."""

    stem_channels: tuple[int, int, int]
    stages: tuple[HGStageSpec, HGStageSpec, HGStageSpec, HGStageSpec]
    layer_num: int  # 3x3 convs per block
    dropout: float


class ESEModule(nn.Layer):
    """Effective squeeze-excitation (VoVNetV2): global pool, one 1x1 conv with bias, sigmoid, rescale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.conv = nn.Conv2D(channels, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x * self.sigmoid(self.conv(self.avg_pool(x)))


class HGBlock(nn.Layer):
    """``layer_num`` chained 3x3 convs, concat of input and all outputs, 1x1 aggregation, ESE, optional identity."""

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, layer_num: int, *, identity: bool
    ):
        super().__init__()
        self.identity = identity
        self.layers = nn.LayerList(
            [ConvBNAct(in_channels if i == 0 else mid_channels, mid_channels, 3) for i in range(layer_num)]
        )
        self.aggregation_conv = ConvBNAct(in_channels + layer_num * mid_channels, out_channels, 1)
        self.att = ESEModule(out_channels)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        outputs = [x]
        y = x
        for layer in self.layers:
            y = layer(y)
            outputs.append(y)
        y = self.att(self.aggregation_conv(paddle.concat(outputs, axis=1)))
        return y + x if self.identity else y


class HGStage(nn.Layer):
    """Optional depthwise stride-2 downsampling, then ``num_blocks`` HG blocks."""

    def __init__(self, spec: HGStageSpec, layer_num: int) -> None:
        super().__init__()
        c = spec.in_channels
        self.downsample = ConvBNAct(c, c, 3, 2, groups=c, act=None) if spec.downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *[
                HGBlock(
                    spec.in_channels if i == 0 else spec.out_channels,
                    spec.mid_channels,
                    spec.out_channels,
                    layer_num,
                    identity=i > 0,
                )
                for i in range(spec.num_blocks)
            ]
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.blocks(self.downsample(x))


class PPHGNetBackbone(nn.Layer):
    """Stem, max-pool and four stages; ``forward`` returns the stride-32 map (or all stage outputs)."""

    def __init__(self, spec: HGNetSpec, *, return_stages: bool = False) -> None:
        super().__init__()
        channels = (3, *spec.stem_channels)
        self.stem = nn.Sequential(
            *[
                ConvBNAct(channels[i], channels[i + 1], 3, 2 if i == 0 else 1)
                for i in range(len(channels) - 1)
            ]
        )
        self.pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self.stages = nn.LayerList([HGStage(s, spec.layer_num) for s in spec.stages])
        self.return_stages = return_stages
        self.out_channels = [s.out_channels for s in spec.stages]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor | list[paddle.Tensor]:
        x = self.pool(self.stem(x))
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs if self.return_stages else x


class PPHGNet(nn.Layer):
    """PP-HGNet classifier (logits)."""

    def __init__(self, spec: HGNetSpec, num_classes: int = 1000) -> None:
        super().__init__()
        self.backbone = PPHGNetBackbone(spec)
        self.head = PooledConvHead(
            spec.stages[-1].out_channels, 2048, num_classes, act="relu", dropout=spec.dropout
        )

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """The pooled 2048-d feature vector before the classifier."""
        return self.head.features(self.backbone(x))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.head(self.backbone(x))


def _stages(
    *rows: tuple[int, int, int, int, bool],
) -> tuple[HGStageSpec, HGStageSpec, HGStageSpec, HGStageSpec]:
    specs = tuple(HGStageSpec(*row) for row in rows)
    if len(specs) != 4:
        raise ValueError(f"PP-HGNet has 4 stages, got {len(specs)}")
    return specs  # type: ignore[return-value]


# The three PaddleX sizes; rows are (in, mid, out, blocks, downsample) per stage.
VARIANTS: dict[str, HGNetSpec] = {
    "tiny": HGNetSpec(
        (48, 48, 96),
        _stages(
            (96, 96, 224, 1, False),
            (224, 128, 448, 1, True),
            (448, 160, 512, 2, True),
            (512, 192, 768, 1, True),
        ),
        layer_num=5,
        dropout=0.0,
    ),
    "small": HGNetSpec(
        (64, 64, 128),
        _stages(
            (128, 128, 256, 1, False),
            (256, 160, 512, 1, True),
            (512, 192, 768, 2, True),
            (768, 224, 1024, 1, True),
        ),
        layer_num=6,
        dropout=0.0,
    ),
    "base": HGNetSpec(
        (96, 96, 160),
        _stages(
            (160, 192, 320, 1, False),
            (320, 224, 640, 2, True),
            (640, 256, 960, 3, True),
            (960, 288, 1280, 2, True),
        ),
        layer_num=7,
        dropout=0.2,
    ),
}


def build_classifier(variant: str) -> nn.Layer:
    """PP-HGNet ``variant`` ("tiny", "small", "base") with softmax, in eval mode."""
    model = SoftmaxOutput(PPHGNet(VARIANTS[variant]))
    model.eval()
    return model
