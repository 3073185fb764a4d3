"""PP-HGNetV2 (PaddleClas, 2023), B0 ... B6: the second PP-HGNet generation.

Changes from PP-HGNet, per PaddleClas' description: a stem that mixes a 2x2 conv pair with a 2x2 max-pool
branch (both "SAME" padded) and concatenates them; later stages replace plain 3x3 convs by "light" blocks
(1x1 conv without activation, then a 5x5 depthwise conv); HG blocks aggregate with a 1x1 squeeze to half the
output width and a 1x1 excitation instead of ESE; the small sizes (B0-B3) add a learnable affine block (LAB:
``scale * x + bias``) after every activation.
"""

from __future__ import annotations

from dataclasses import dataclass

import paddle
from paddle import nn

from hpi.zoo.nets.layers import ConvBNAct, LearnableAffineBlock, SoftmaxOutput


@dataclass(frozen=True)
class HGV2StageSpec:
    """One PP-HGNetV2 stage."""

    in_channels: int
    mid_channels: int  # width of each conv inside a block
    out_channels: int
    num_blocks: int
    downsample: bool  # depthwise 3x3 stride-2 conv + BN before the blocks
    light_block: bool  # 1x1 conv + depthwise KxK instead of a full KxK conv
    kernel_size: int
    layer_num: int  # convs per block


@dataclass(frozen=True)
class HGNetV2Spec:
    """A PP-HGNetV2 size."""

    stem_channels: tuple[int, int]  # (mid, out) of the stem
    stages: tuple[HGV2StageSpec, ...]
    use_lab: bool


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    *,
    groups: int = 1,
    padding: int | str | None = None,
    use_act: bool = True,
    use_lab: bool = False,
) -> ConvBNAct:
    """Conv-BN, then ReLU (and LAB after it when ``use_lab``) unless ``use_act`` is False."""
    act: nn.Layer | None = None
    if use_act:
        act = nn.Sequential(nn.ReLU(), LearnableAffineBlock()) if use_lab else nn.ReLU()
    return ConvBNAct(in_channels, out_channels, kernel_size, stride, groups=groups, padding=padding, act=act)


class LightConvBNAct(nn.Layer):
    """1x1 conv-BN (no activation) to the output width, then a depthwise KxK conv-BN-act."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, use_lab: bool) -> None:
        super().__init__()
        self.conv1 = conv_bn_act(in_channels, out_channels, 1, use_act=False, use_lab=use_lab)
        self.conv2 = conv_bn_act(
            out_channels, out_channels, kernel_size, groups=out_channels, use_lab=use_lab
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.conv2(self.conv1(x))


class StemBlock(nn.Layer):
    """3x3/2 conv; then [2x2 conv, 2x2 conv] beside a 2x2 max-pool, concatenated; 3x3/2 conv; 1x1 conv."""

    def __init__(self, mid_channels: int, out_channels: int, *, use_lab: bool) -> None:
        super().__init__()
        self.stem1 = conv_bn_act(3, mid_channels, 3, 2, use_lab=use_lab)
        self.stem2a = conv_bn_act(mid_channels, mid_channels // 2, 2, padding="SAME", use_lab=use_lab)
        self.stem2b = conv_bn_act(mid_channels // 2, mid_channels, 2, padding="SAME", use_lab=use_lab)
        self.stem3 = conv_bn_act(mid_channels * 2, mid_channels, 3, 2, use_lab=use_lab)
        self.stem4 = conv_bn_act(mid_channels, out_channels, 1, use_lab=use_lab)
        self.pool = nn.MaxPool2D(kernel_size=2, stride=1, ceil_mode=True, padding="SAME")

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.stem1(x)
        branch = self.stem2b(self.stem2a(x))
        x = paddle.concat([self.pool(x), branch], axis=1)
        return self.stem4(self.stem3(x))


class HGV2Block(nn.Layer):
    """Chained convs, concat of input and all outputs, 1x1 squeeze to out/2, 1x1 excitation, optional identity."""

    def __init__(self, spec: HGV2StageSpec, in_channels: int, *, identity: bool, use_lab: bool) -> None:
        super().__init__()
        self.identity = identity
        mid, k = spec.mid_channels, spec.kernel_size
        layers: list[nn.Layer] = []
        for i in range(spec.layer_num):
            cin = in_channels if i == 0 else mid
            if spec.light_block:
                layers.append(LightConvBNAct(cin, mid, k, use_lab=use_lab))
            else:
                layers.append(conv_bn_act(cin, mid, k, use_lab=use_lab))
        self.layers = nn.LayerList(layers)
        total = in_channels + spec.layer_num * mid
        self.aggregation_squeeze_conv = conv_bn_act(total, spec.out_channels // 2, 1, use_lab=use_lab)
        self.aggregation_excitation_conv = conv_bn_act(
            spec.out_channels // 2, spec.out_channels, 1, use_lab=use_lab
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        outputs = [x]
        y = x
        for layer in self.layers:
            y = layer(y)
            outputs.append(y)
        y = self.aggregation_excitation_conv(self.aggregation_squeeze_conv(paddle.concat(outputs, axis=1)))
        return y + x if self.identity else y


class HGV2Stage(nn.Layer):
    """Optional depthwise stride-2 downsampling (no activation), then the stage's HG blocks."""

    def __init__(self, spec: HGV2StageSpec, *, use_lab: bool) -> None:
        super().__init__()
        c = spec.in_channels
        self.downsample = (
            conv_bn_act(c, c, 3, 2, groups=c, use_act=False, use_lab=use_lab)
            if spec.downsample
            else nn.Identity()
        )
        self.blocks = nn.Sequential(
            *[
                HGV2Block(spec, c if i == 0 else spec.out_channels, identity=i > 0, use_lab=use_lab)
                for i in range(spec.num_blocks)
            ]
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.blocks(self.downsample(x))


class PPHGNetV2Backbone(nn.Layer):
    """Stem and four stages; ``forward`` returns the stride-32 map, or every stage's output if asked."""

    def __init__(self, spec: HGNetV2Spec, *, return_stages: bool = False) -> None:
        super().__init__()
        self.stem = StemBlock(*spec.stem_channels, use_lab=spec.use_lab)
        self.stages = nn.LayerList([HGV2Stage(s, use_lab=spec.use_lab) for s in spec.stages])
        self.return_stages = return_stages
        self.out_channels = [s.out_channels for s in spec.stages]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor | list[paddle.Tensor]:
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs if self.return_stages else x


class PPHGNetV2(nn.Layer):
    """PP-HGNetV2 classifier: backbone, global pool, 1x1 conv to 2048, ReLU (+LAB), dropout, linear (logits)."""

    def __init__(self, spec: HGNetV2Spec, num_classes: int = 1000, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = PPHGNetV2Backbone(spec)
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.last_conv = nn.Conv2D(spec.stages[-1].out_channels, 2048, 1, bias_attr=False)
        self.act = nn.Sequential(nn.ReLU(), LearnableAffineBlock()) if spec.use_lab else nn.ReLU()
        self.dropout = nn.Dropout(p=dropout, mode="downscale_in_infer")
        self.flatten = nn.Flatten(start_axis=1, stop_axis=-1)
        self.classifier = nn.Linear(2048, num_classes)

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """The pooled 2048-d feature vector before the classifier."""
        x = self.avg_pool(self.backbone(x))
        return self.flatten(self.dropout(self.act(self.last_conv(x))))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(self.forward_features(x))


def _spec(
    stem: tuple[int, int], rows: tuple[tuple[int, int, int, int, bool, bool, int, int], ...], use_lab: bool
) -> HGNetV2Spec:
    return HGNetV2Spec(stem, tuple(HGV2StageSpec(*row) for row in rows), use_lab)


# Per size: stem (mid, out); stages as (in, mid, out, blocks, downsample, light, kernel, layers); LAB or not.
VARIANTS: dict[str, HGNetV2Spec] = {
    "B0": _spec(
        (16, 16),
        (
            (16, 16, 64, 1, False, False, 3, 3),
            (64, 32, 256, 1, True, False, 3, 3),
            (256, 64, 512, 2, True, True, 5, 3),
            (512, 128, 1024, 1, True, True, 5, 3),
        ),
        use_lab=True,
    ),
    "B1": _spec(
        (24, 32),
        (
            (32, 32, 64, 1, False, False, 3, 3),
            (64, 48, 256, 1, True, False, 3, 3),
            (256, 96, 512, 2, True, True, 5, 3),
            (512, 192, 1024, 1, True, True, 5, 3),
        ),
        use_lab=True,
    ),
    "B2": _spec(
        (24, 32),
        (
            (32, 32, 96, 1, False, False, 3, 4),
            (96, 64, 384, 1, True, False, 3, 4),
            (384, 128, 768, 3, True, True, 5, 4),
            (768, 256, 1536, 1, True, True, 5, 4),
        ),
        use_lab=True,
    ),
    "B3": _spec(
        (24, 32),
        (
            (32, 32, 128, 1, False, False, 3, 5),
            (128, 64, 512, 1, True, False, 3, 5),
            (512, 128, 1024, 3, True, True, 5, 5),
            (1024, 256, 2048, 1, True, True, 5, 5),
        ),
        use_lab=True,
    ),
    "B4": _spec(
        (32, 48),
        (
            (48, 48, 128, 1, False, False, 3, 6),
            (128, 96, 512, 1, True, False, 3, 6),
            (512, 192, 1024, 3, True, True, 5, 6),
            (1024, 384, 2048, 1, True, True, 5, 6),
        ),
        use_lab=False,
    ),
    "B5": _spec(
        (32, 64),
        (
            (64, 64, 128, 1, False, False, 3, 6),
            (128, 128, 512, 2, True, False, 3, 6),
            (512, 256, 1024, 5, True, True, 5, 6),
            (1024, 512, 2048, 2, True, True, 5, 6),
        ),
        use_lab=False,
    ),
    "B6": _spec(
        (48, 96),
        (
            (96, 96, 192, 2, False, False, 3, 6),
            (192, 192, 512, 3, True, False, 3, 6),
            (512, 384, 1024, 6, True, True, 5, 6),
            (1024, 768, 2048, 3, True, True, 5, 6),
        ),
        use_lab=False,
    ),
}


def build_classifier(variant: str) -> nn.Layer:
    """PP-HGNetV2 ``variant`` ("B0" ... "B6") with softmax, in eval mode."""
    model = SoftmaxOutput(PPHGNetV2(VARIANTS[variant]))
    model.eval()
    return model
