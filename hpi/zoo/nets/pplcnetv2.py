"""PP-LCNetV2 (PaddleClas, 2022): PP-LCNet's CPU-first design with re-parameterised depthwise convolutions.

What changes from PP-LCNet: ReLU instead of hard-swish; a 3x3 stem at stride 2 followed by a depthwise-
separable block; in stages 3 and 4 the depthwise convolution is trained as parallel 5x5 / 3x3 / 1x1 branches
with BatchNorm and folded into one 5x5 convolution (with bias) for inference; stage 3 splits its pointwise
convolution in two (half width, then full) and uses SE (sigmoid gate); stage 4 adds a residual shortcut.

hpi builds the folded (deploy) form directly, because that is the graph PaddleX exports and runs, so latency
is measured on the right ops. Its parameter count differs slightly from training-form figures (the extra
3x3 / 1x1 branches and their BatchNorms are gone, the folded conv has a bias): 6.62 M trainable for base,
against PaddleClas' published 6.6 M.

:class:`PPLCNetV2Backbone` is importable on its own: :class:`ShiTuRec`, PP-ShiTuV2's recognition network, is
PP-LCNetV2_base's features (``forward`` returns the last map, :meth:`PPLCNetV2.forward_features` the pooled vector)
with an embedding neck.
"""

from __future__ import annotations

from dataclasses import dataclass

import paddle
from paddle import nn

from hpi.zoo.nets.layers import ConvBNAct, PooledConvHead, SEModule, SoftmaxOutput, make_divisible


@dataclass(frozen=True)
class StageSpec:
    """One PP-LCNetV2 stage at scale 1.0."""

    in_channels: int  # input channels of the stage's first block; every block outputs 2x this
    kernel_size: int  # depthwise kernel
    split_pw: bool  # pointwise conv as two 1x1 convs (out/2, then out)
    use_rep: bool  # re-parameterised depthwise conv: a single conv with bias, no BN, at inference
    use_se: bool  # SE after the depthwise conv
    use_shortcut: bool  # residual add where shapes allow (stride 1, same channels)


STAGES = (
    StageSpec(64, 3, split_pw=False, use_rep=False, use_se=False, use_shortcut=False),
    StageSpec(128, 3, split_pw=False, use_rep=False, use_se=False, use_shortcut=False),
    StageSpec(256, 5, split_pw=True, use_rep=True, use_se=True, use_shortcut=False),
    StageSpec(512, 5, split_pw=False, use_rep=True, use_se=False, use_shortcut=True),
)
HEAD_CHANNELS = 1280


class RepDepthwiseSeparable(nn.Layer):
    """Depthwise conv (folded re-parameterised form when ``use_rep``), optional SE, pointwise conv(s), shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        kernel_size: int,
        spec: StageSpec | None = None,
    ) -> None:
        super().__init__()
        spec = spec or StageSpec(in_channels, kernel_size, False, False, False, False)
        self.use_shortcut = spec.use_shortcut and stride == 1 and in_channels == out_channels
        if spec.use_rep:
            # The sum of the 5x5/3x3/1x1 BN branches folds into one biased conv; ReLU follows.
            self.dw_conv = nn.Sequential(
                nn.Conv2D(
                    in_channels,
                    in_channels,
                    kernel_size,
                    stride=stride,
                    padding=(kernel_size - 1) // 2,
                    groups=in_channels,
                ),
                nn.ReLU(),
            )
        else:
            self.dw_conv = ConvBNAct(
                in_channels, in_channels, kernel_size, stride, groups=in_channels, act="relu"
            )
        self.se = SEModule(in_channels, 4, act="relu", gate="sigmoid") if spec.use_se else nn.Identity()
        if spec.split_pw:
            half = int(out_channels * 0.5)
            self.pw_conv = nn.Sequential(
                ConvBNAct(in_channels, half, 1, act="relu"), ConvBNAct(half, out_channels, 1, act="relu")
            )
        else:
            self.pw_conv = ConvBNAct(in_channels, out_channels, 1, act="relu")

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.pw_conv(self.se(self.dw_conv(x)))
        return y + x if self.use_shortcut else y


class PPLCNetV2Backbone(nn.Layer):
    """Stem and four stages; ``forward`` returns the stride-32 feature map.

    Args:
        scale: width multiplier (small 0.75, base 1.0, large 1.25).
        depths: blocks per stage (small (2, 2, 4, 2), base (2, 2, 6, 2), large (2, 2, 8, 2)).
    """

    def __init__(self, scale: float = 1.0, depths: tuple[int, int, int, int] = (2, 2, 6, 2)) -> None:
        super().__init__()
        stem_out = make_divisible(32 * scale)
        self.stem = nn.Sequential(
            ConvBNAct(3, stem_out, 3, 2, act="relu"),
            RepDepthwiseSeparable(stem_out, make_divisible(64 * scale), 1, 3),
        )
        stages = []
        for spec, depth in zip(STAGES, depths, strict=True):
            blocks = [
                RepDepthwiseSeparable(
                    make_divisible((spec.in_channels if i == 0 else spec.in_channels * 2) * scale),
                    make_divisible(spec.in_channels * 2 * scale),
                    2 if i == 0 else 1,
                    spec.kernel_size,
                    spec,
                )
                for i in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.LayerList(stages)
        self.out_channels = make_divisible(STAGES[-1].in_channels * 2 * scale)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class PPLCNetV2(nn.Layer):
    """PP-LCNetV2 classifier: backbone, global pool, 1x1 conv to 1280, ReLU, dropout, linear (logits)."""

    def __init__(
        self,
        scale: float = 1.0,
        depths: tuple[int, int, int, int] = (2, 2, 6, 2),
        num_classes: int = 1000,
        *,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.backbone = PPLCNetV2Backbone(scale, depths)
        self.head = PooledConvHead(
            self.backbone.out_channels, HEAD_CHANNELS, num_classes, act="relu", dropout=dropout
        )

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """The pooled 1280-d feature vector before the classifier."""
        return self.head.features(self.backbone(x))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.head(self.backbone(x))


# name suffix -> (width scale, blocks per stage), as PaddleClas defines the three sizes
VARIANTS: dict[str, tuple[float, tuple[int, int, int, int]]] = {
    "small": (0.75, (2, 2, 4, 2)),
    "base": (1.0, (2, 2, 6, 2)),
    "large": (1.25, (2, 2, 8, 2)),
}


def build_classifier(variant: str) -> nn.Layer:
    """PP-LCNetV2 ``variant`` ("small", "base", "large") with softmax, in eval mode."""
    scale, depths = VARIANTS[variant]
    model = SoftmaxOutput(PPLCNetV2(scale, depths))
    model.eval()
    return model


class ShiTuRec(nn.Layer):
    """PP-ShiTuV2_rec's network, PaddleClas' ``PPLCNetV2_base_ShiTu`` + ``BNNeck``: PP-LCNetV2_base whose last stage
    does not downsample (stride 16), global pool, a biased 1x1 conv to ``dim`` without activation, dropout,
    flatten, BatchNorm1D. Outputs the raw (not normalised) embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.backbone = PPLCNetV2Backbone(1.0, (2, 2, 6, 2))
        # PaddleClas' PPLCNetV2_base_ShiTu gives the last stage's first block stride 1 (shapes otherwise unchanged).
        last = STAGES[-1]
        self.backbone.stages[-1][0] = RepDepthwiseSeparable(
            last.in_channels, self.backbone.out_channels, 1, last.kernel_size, last
        )
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.last_conv = nn.Conv2D(self.backbone.out_channels, dim, 1)
        self.dropout = nn.Dropout(p=0.2, mode="downscale_in_infer")
        self.flatten = nn.Flatten(start_axis=1, stop_axis=-1)
        self.neck_bn = nn.BatchNorm1D(dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.dropout(self.last_conv(self.avg_pool(self.backbone(x))))
        return self.neck_bn(self.flatten(x))
