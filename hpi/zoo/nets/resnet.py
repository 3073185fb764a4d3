"""ResNet (He et al., 2016) and ResNet-vd (He et al., "Bag of Tricks", 2019), as PaddleClas builds them.

Layout of the PaddleClas variant, which the exported graphs must reproduce op for op:

* stem: ``vb`` one 7x7/2 conv; ``vd`` three 3x3 convs (32, 32, 64 channels, the first with stride 2); then a
  3x3/2 max pool;
* four stages of basic blocks (ResNet18/34) or bottleneck blocks (ResNet50 and deeper), widths 64-128-256-512
  (times 4 after a bottleneck); the bottleneck strides in its 3x3 conv;
* the first block of *every* stage has a 1x1 projection shortcut, even when the shape does not change (PaddleClas
  sets ``use_first_short_conv``; torchvision does not, so PaddleClas' ResNet18/34 have 4k more weights);
* ``vd`` downsamples a projection shortcut with a 2x2 average pool (ceil mode) before a stride-1 1x1 conv,
  except in the first stage where nothing is downsampled;
* head: global average pool, flatten, one linear layer (``.classifier``) to 1000 classes.

ResNet200_vd uses PaddleClas' depths ``[3, 12, 48, 3]`` (74.7M parameters), not the 64.7M ``[3, 24, 36, 3]`` of
the original paper.
"""

from __future__ import annotations

from typing import Literal

import paddle
from paddle import nn

from hpi.zoo.nets.layers import ConvBNAct, SoftmaxOutput

BlockKind = Literal["basic", "bottleneck"]

# depth -> (block kind, blocks per stage), as PaddleClas' NET_CONFIG.
DEPTHS: dict[int, tuple[BlockKind, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 12, 48, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)


class Shortcut(nn.Layer):
    """1x1 projection; with ``avg_down`` (vd) a 2x2 average pool does the striding instead of the conv."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, avg_down: bool) -> None:
        super().__init__()
        self.pool = (
            nn.AvgPool2D(kernel_size=2, stride=stride, padding=0, ceil_mode=True)
            if avg_down
            else nn.Identity()
        )
        self.conv = ConvBNAct(in_channels, out_channels, 1, 1 if avg_down else stride, act=None)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.conv(self.pool(x))


class BasicBlock(nn.Layer):
    """Two 3x3 conv-BN (ReLU between), added to the shortcut, ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, shortcut: nn.Layer | None) -> None:
        super().__init__()
        self.conv0 = ConvBNAct(in_channels, width, 3, stride, act="relu")
        self.conv1 = ConvBNAct(width, width, 3, 1, act=None)
        self.short = shortcut if shortcut is not None else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.relu(paddle.add(self.conv1(self.conv0(x)), self.short(x)))


class BottleneckBlock(nn.Layer):
    """1x1 reduce, 3x3 (strided), 1x1 expand to 4x width, added to the shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, shortcut: nn.Layer | None) -> None:
        super().__init__()
        self.conv0 = ConvBNAct(in_channels, width, 1, 1, act="relu")
        self.conv1 = ConvBNAct(width, width, 3, stride, act="relu")
        self.conv2 = ConvBNAct(width, width * 4, 1, 1, act=None)
        self.short = shortcut if shortcut is not None else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.relu(paddle.add(self.conv2(self.conv1(self.conv0(x))), self.short(x)))


class ResNet(nn.Layer):
    """ResNet returning logits; ``.classifier`` is the final linear layer.

    Args:
        depth: one of 18, 34, 50, 101, 152, 200.
        vd: build the ResNet-vd variant (deep stem, average-pool downsampling in shortcuts).
        num_classes: classifier outputs.

    Raises:
        ValueError: ``depth`` is not a ResNet depth; the message lists the known ones.
    """

    def __init__(self, depth: int, *, vd: bool = False, num_classes: int = 1000) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth {depth!r} is not supported; known: {', '.join(map(str, DEPTHS))}")
        kind, depths = DEPTHS[depth]
        block_cls = BasicBlock if kind == "basic" else BottleneckBlock
        if vd:
            self.stem = nn.Sequential(
                ConvBNAct(3, 32, 3, 2, act="relu"),
                ConvBNAct(32, 32, 3, 1, act="relu"),
                ConvBNAct(32, 64, 3, 1, act="relu"),
            )
        else:
            self.stem = nn.Sequential(ConvBNAct(3, 64, 7, 2, act="relu"))
        self.max_pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)

        blocks = []
        in_channels = 64
        for stage, (count, width) in enumerate(zip(depths, STAGE_WIDTHS, strict=True)):
            out_channels = width * block_cls.expansion
            for i in range(count):
                stride = 2 if i == 0 and stage > 0 else 1
                shortcut = (
                    Shortcut(in_channels, out_channels, stride, avg_down=vd and stage > 0) if i == 0 else None
                )
                blocks.append(block_cls(in_channels, width, stride, shortcut))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = in_channels

        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten(start_axis=1, stop_axis=-1)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """The last feature map (N, 512 or 2048, H/32, W/32)."""
        return self.blocks(self.max_pool(self.stem(x)))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(self.flatten(self.avg_pool(self.forward_features(x))))


def build_classifier(depth: int, vd: bool) -> nn.Layer:
    """ResNet``depth`` (``_vd`` when ``vd``) with the softmax PaddleClas exports, in eval mode."""
    model = SoftmaxOutput(ResNet(depth, vd=vd))
    model.eval()
    return model
