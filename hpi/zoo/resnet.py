"""ResNet (He et al., 2016) and ResNet-vd (He et al., "Bag of Tricks", 2019), as PaddleClas builds them.

Layout of the PaddleClas variant, which the exported graphs must reproduce op for op:

* stem: ``vb`` one 7x7/2 conv; ``vd`` three 3x3 convs (32, 32, 64 channels, the first with stride 2); then a
  3x3/2 max pool;
* four stages of basic blocks (ResNet18/34) or bottleneck blocks (ResNet50 and deeper), widths 64-128-256-512
  (times 4 after a bottleneck); the bottleneck strides in its 3x3 conv;
* the first block of *every* stage has a 1x1 projection shortcut, even when the shape does not change (PaddleClas
  sets ``use_first_short_conv``; torchvision does not, so PaddleClas' ResNet18/34 have 4k more weights);
* ``vd`` downsamples a projection shortcut with a 2x2 average pool before a stride-1 1x1 conv, except in the first
  stage where nothing is downsampled;
* head: global average pool, flatten, one linear layer to 1000 classes, and the softmax PaddleClas exports.

ResNet200_vd uses PaddleClas' depths ``[3, 12, 48, 3]`` (74.7M parameters), not the 64.7M ``[3, 24, 36, 3]`` of
the original paper.
"""

from __future__ import annotations

import functools
from functools import partial
from typing import TYPE_CHECKING, Literal

from hpi.zoo.registry import ZooModel

if TYPE_CHECKING:
    from paddle import nn

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

# PaddleClas' published parameter counts in millions (docs/zh_CN/models/ImageNet1k/ResNet.md).
PUBLISHED_PARAMS_M: dict[str, float] = {
    "ResNet18": 11.69,
    "ResNet18_vd": 11.71,
    "ResNet34": 21.80,
    "ResNet34_vd": 21.82,
    "ResNet50": 25.56,
    "ResNet50_vd": 25.58,
    "ResNet101": 44.55,
    "ResNet101_vd": 44.57,
    "ResNet152": 60.19,
    "ResNet152_vd": 60.21,
    "ResNet200_vd": 74.74,
}


def _layers():
    """Import Paddle-dependent code only when a model is built (``import hpi.zoo.resnet`` must stay light)."""
    import paddle
    from paddle import nn

    from hpi.zoo import layers

    return paddle, nn, layers


@functools.cache
def _define_classes():
    paddle, nn, layers = _layers()
    conv_bn_act = layers.ConvBNAct

    class Shortcut(nn.Layer):
        """1x1 projection; with ``avg_down`` (vd) a 2x2 average pool does the striding instead of the conv."""

        def __init__(self, in_channels: int, out_channels: int, stride: int, avg_down: bool) -> None:
            super().__init__()
            self.pool = (
                nn.AvgPool2D(kernel_size=2, stride=stride, padding=0, ceil_mode=True)
                if avg_down
                else nn.Identity()
            )
            self.conv = conv_bn_act(in_channels, out_channels, 1, 1 if avg_down else stride, act=None)

        def forward(self, x):
            return self.conv(self.pool(x))

    class BasicBlock(nn.Layer):
        expansion = 1

        def __init__(self, in_channels: int, width: int, stride: int, shortcut: nn.Layer | None) -> None:
            super().__init__()
            self.conv0 = conv_bn_act(in_channels, width, 3, stride, act="relu")
            self.conv1 = conv_bn_act(width, width, 3, 1, act=None)
            self.short = shortcut if shortcut is not None else nn.Identity()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(paddle.add(self.conv1(self.conv0(x)), self.short(x)))

    class BottleneckBlock(nn.Layer):
        expansion = 4

        def __init__(self, in_channels: int, width: int, stride: int, shortcut: nn.Layer | None) -> None:
            super().__init__()
            self.conv0 = conv_bn_act(in_channels, width, 1, 1, act="relu")
            self.conv1 = conv_bn_act(width, width, 3, stride, act="relu")
            self.conv2 = conv_bn_act(width, width * 4, 1, 1, act=None)
            self.short = shortcut if shortcut is not None else nn.Identity()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(paddle.add(self.conv2(self.conv1(self.conv0(x))), self.short(x)))

    class ResNet(nn.Layer):
        """ResNet returning logits; ``.classifier`` is the final linear layer.

        Args:
            depth: one of 18, 34, 50, 101, 152, 200.
            vd: build the ResNet-vd variant (deep stem, average-pool downsampling in shortcuts).
            num_classes: classifier outputs.
        """

        def __init__(self, depth: int, *, vd: bool = False, num_classes: int = 1000) -> None:
            super().__init__()
            kind, depths = DEPTHS[depth]
            block_cls = BasicBlock if kind == "basic" else BottleneckBlock
            if vd:
                self.stem = nn.Sequential(
                    conv_bn_act(3, 32, 3, 2, act="relu"),
                    conv_bn_act(32, 32, 3, 1, act="relu"),
                    conv_bn_act(32, 64, 3, 1, act="relu"),
                )
            else:
                self.stem = nn.Sequential(conv_bn_act(3, 64, 7, 2, act="relu"))
            self.max_pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)

            blocks = []
            in_channels = 64
            for stage, (count, width) in enumerate(zip(depths, STAGE_WIDTHS, strict=True)):
                out_channels = width * block_cls.expansion
                for i in range(count):
                    stride = 2 if i == 0 and stage > 0 else 1
                    shortcut = None
                    if i == 0:
                        shortcut = Shortcut(in_channels, out_channels, stride, avg_down=vd and stage > 0)
                    blocks.append(block_cls(in_channels, width, stride, shortcut))
                    in_channels = out_channels
            self.blocks = nn.Sequential(*blocks)

            self.avg_pool = nn.AdaptiveAvgPool2D(1)
            self.flatten = nn.Flatten(start_axis=1, stop_axis=-1)
            self.classifier = nn.Linear(in_channels, num_classes)
            self.out_channels = in_channels

        def forward_features(self, x):
            """The last feature map (N, 512 or 2048, H/32, W/32)."""
            return self.blocks(self.max_pool(self.stem(x)))

        def forward(self, x):
            return self.classifier(self.flatten(self.avg_pool(self.forward_features(x))))

    return ResNet


def resnet(depth: int, *, vd: bool = False, num_classes: int = 1000) -> nn.Layer:
    """Build a ResNet returning logits (no softmax), in train mode as Paddle layers start.

    Args:
        depth: one of 18, 34, 50, 101, 152, 200.
        vd: the ResNet-vd variant.
        num_classes: classifier outputs.

    Raises:
        ValueError: ``depth`` is not a ResNet depth; the message lists the known ones.
    """
    if depth not in DEPTHS:
        raise ValueError(f"ResNet depth {depth!r} is not supported; known: {', '.join(map(str, DEPTHS))}")
    return _define_classes()(depth, vd=vd, num_classes=num_classes)


def _build(depth: int, vd: bool) -> nn.Layer:
    from hpi.zoo.layers import SoftmaxOutput

    model = SoftmaxOutput(resnet(depth, vd=vd))
    model.eval()
    return model


def _zoo_model(depth: int, vd: bool) -> ZooModel:
    name = f"ResNet{depth}{'_vd' if vd else ''}"
    return ZooModel(
        name=name,
        family="ResNet",
        build=partial(_build, depth, vd),
        extra={"published_params_m": PUBLISHED_PARAMS_M[name]},
    )


# The names PaddleX's classification module lists (ResNet200 exists only as ResNet200_vd there).
MODELS: list[ZooModel] = [
    _zoo_model(depth, vd)
    for depth in (18, 34, 50, 101, 152, 200)
    for vd in (False, True)
    if not (depth == 200 and not vd)
]
