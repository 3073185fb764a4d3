"""PP-LCNet (Cui et al., 2021, "PP-LCNet: A Lightweight CPU Convolutional Neural Network", arXiv:2109.15099).

A MobileNetV1-like stack of depthwise-separable blocks tuned for Intel CPUs with MKLDNN: H-Swish everywhere,
5x5 depthwise kernels only in the last two stages, SE only in the last two blocks (gate: hard-sigmoid), and a
1x1 convolution to 1280 channels after global pooling. Widths are scaled by ``scale`` and rounded with
:func:`~hpi.zoo.nets.layers.make_divisible`, so every PaddleX size x0_25 ... x2_5 comes from the one table below.

:class:`PPLCNetBackbone` is separate from the classifier so that a detector (PicoDet, as in PP-ShiTuV2_det with
``scale=2.5``) can take the stride-8/16/32 maps via ``return_blocks=(4, 5, 6)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import paddle
from paddle import nn

from hpi.zoo.nets.layers import ActSpec, ConvBNAct, PooledConvHead, SEModule, SoftmaxOutput, make_divisible

# Per block group "blocksN" (N = 2..6, the names PaddleClas and PaddleDetection use for the stages), the
# depthwise-separable blocks as (depthwise kernel, in channels, out channels, stride, SE) at scale 1.0.
# blocks3..blocks6 each start with a stride-2 block; the stem adds one more, so blocks6 runs at stride 32.
BLOCKS: dict[int, tuple[tuple[int, int, int, int, bool], ...]] = {
    2: ((3, 16, 32, 1, False),),
    3: ((3, 32, 64, 2, False), (3, 64, 64, 1, False)),
    4: ((3, 64, 128, 2, False), (3, 128, 128, 1, False)),
    5: ((3, 128, 256, 2, False),) + ((5, 256, 256, 1, False),) * 5,
    6: ((5, 256, 512, 2, True), (5, 512, 512, 1, True)),
}
STEM_CHANNELS = 16
HEAD_CHANNELS = 1280  # the "larger 1x1 conv after GAP" of the paper


class DepthwiseSeparable(nn.Layer):
    """Depthwise KxK conv-BN-act, optional SE, pointwise 1x1 conv-BN-act (no residual: adds cost on CPU)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        kernel_size: int,
        *,
        use_se: bool,
        act: ActSpec,
    ) -> None:
        super().__init__()
        self.dw_conv = ConvBNAct(in_channels, in_channels, kernel_size, stride, groups=in_channels, act=act)
        self.se = SEModule(in_channels, 4, act="relu", gate="hardsigmoid") if use_se else nn.Identity()
        self.pw_conv = ConvBNAct(in_channels, out_channels, 1, act=act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.pw_conv(self.se(self.dw_conv(x)))


class PPLCNetBackbone(nn.Layer):
    """The PP-LCNet feature extractor: stem conv and block groups blocks2..blocks6.

    Args:
        scale: width multiplier (0.25 ... 2.5 in PaddleX).
        act: activation in every conv (PaddleClas uses hard-swish; PicoDet variants may pass another).
        return_blocks: block-group numbers (2..6) whose outputs ``forward`` returns as a list, in order; None
            returns only the last feature map. PicoDet takes ``(4, 5, 6)``: strides 8, 16 and 32.

    Raises:
        ValueError: a block number outside 2..6.
    """

    def __init__(
        self, scale: float = 1.0, *, act: ActSpec = "hardswish", return_blocks: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if return_blocks is not None and not set(return_blocks) <= set(BLOCKS):
            raise ValueError(
                f"return_blocks {list(return_blocks)} must be block numbers among {sorted(BLOCKS)}"
            )
        self.scale = scale
        self.return_blocks = tuple(return_blocks) if return_blocks is not None else None
        self.conv1 = ConvBNAct(3, make_divisible(STEM_CHANNELS * scale), 3, 2, act=act)
        self.block_channels: dict[int, int] = {}
        for n, blocks in BLOCKS.items():
            layers = [
                DepthwiseSeparable(
                    make_divisible(cin * scale), make_divisible(cout * scale), s, k, use_se=se, act=act
                )
                for k, cin, cout, s, se in blocks
            ]
            setattr(self, f"blocks{n}", nn.Sequential(*layers))
            self.block_channels[n] = make_divisible(blocks[-1][2] * scale)

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned map (of the last map when ``return_blocks`` is None)."""
        blocks = self.return_blocks if self.return_blocks is not None else (max(BLOCKS),)
        return [self.block_channels[n] for n in blocks]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor | list[paddle.Tensor]:
        x = self.conv1(x)
        outputs = []
        for n in BLOCKS:
            x = getattr(self, f"blocks{n}")(x)
            if self.return_blocks is not None and n in self.return_blocks:
                outputs.append(x)
        return outputs if self.return_blocks is not None else x


class PPLCNet(nn.Layer):
    """PP-LCNet classifier: backbone, then global pool, 1x1 conv to 1280, hard-swish, dropout, linear (logits)."""

    def __init__(self, scale: float = 1.0, num_classes: int = 1000, *, dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone = PPLCNetBackbone(scale)
        self.head = PooledConvHead(
            self.backbone.out_channels[-1], HEAD_CHANNELS, num_classes, act="hardswish", dropout=dropout
        )

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """The pooled 1280-d feature vector before the classifier."""
        return self.head.features(self.backbone(x))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.head(self.backbone(x))


def build_classifier(scale: float) -> nn.Layer:
    """PP-LCNet at ``scale`` with the softmax PaddleClas exports, in eval mode."""
    model = SoftmaxOutput(PPLCNet(scale))
    model.eval()
    return model
