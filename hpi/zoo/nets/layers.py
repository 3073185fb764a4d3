"""Building blocks shared by the zoo's architectures (Paddle imported here: only load this to build a model).

Several families are written against these blocks (PP-LCNet, PP-HGNet, ResNet-vd, MobileNetV3, ...), so the
signatures below are stable: new options are added as keyword-only arguments with defaults, never changed.

Conventions every family follows, because :mod:`hpi.zoo.seeding` relies on them when it seeds weights:

* convolutions are followed by ``nn.BatchNorm2D`` (its statistics are calibrated on real photos at build time);
* a classification network exposes its last linear layer as ``.classifier`` (or it is the last ``nn.Linear``);
* the network returns logits; :class:`SoftmaxOutput` adds the softmax that PaddleClas exports end with.
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

ActSpec = str | nn.Layer | None  # an activation by name (see make_act), a ready layer, or None for identity


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a scaled channel count to a multiple of ``divisor``, never more than 10% below ``value``.

    The rule MobileNet and PP-LCNet use, so that width multipliers give the published channel counts.
    """
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class HardSigmoid(nn.Layer):
    """``clip(slope * x + offset, 0, 1)``; PaddleClas' MobileNetV3 uses slope 0.2, where ``nn.Hardsigmoid`` has 1/6."""

    def __init__(self, slope: float = 0.2, offset: float = 0.5) -> None:
        super().__init__()
        self.slope = slope
        self.offset = offset

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.hardsigmoid(x, slope=self.slope, offset=self.offset)


_ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "hardsigmoid": nn.Hardsigmoid,  # slope 1/6, offset 0.5 (PP-LCNet's SE gate)
    "sigmoid": nn.Sigmoid,
    "silu": nn.Silu,
    "swish": nn.Swish,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def make_act(act: ActSpec) -> nn.Layer:
    """An activation layer from a name, a layer (returned as is) or None (identity).

    Raises:
        ValueError: the name is unknown; the message lists the known names.
    """
    if act is None:
        return nn.Identity()
    if isinstance(act, nn.Layer):
        return act
    try:
        return _ACTIVATIONS[act.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {act!r}; known: {', '.join(sorted(_ACTIVATIONS))}") from None


class ConvBNAct(nn.Layer):
    """Conv2D (no bias) + BatchNorm2D + activation: the unit almost every CNN in the zoo is made of.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel side.
        stride: convolution stride.
        groups: convolution groups (``groups == in_channels`` for depthwise).
        padding: explicit padding (an int, or a Paddle mode such as ``"SAME"``, which PP-HGNetV2's 2x2 stem
            convolutions use); default ``(kernel_size - 1) // 2 * dilation`` keeps the size at stride 1.
        dilation: convolution dilation.
        act: activation after BN (name, layer or None).
        bias: whether the convolution has a bias (BN makes it redundant, so PaddleClas omits it).
        bn_momentum: BatchNorm momentum (only matters when training).
        bn_epsilon: BatchNorm epsilon, kept because exported graphs carry it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        groups: int = 1,
        padding: int | str | None = None,
        dilation: int = 1,
        act: ActSpec = "relu",
        bias: bool = False,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        self.conv = nn.Conv2D(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias_attr=None if bias else False,
        )
        self.bn = nn.BatchNorm2D(out_channels, momentum=bn_momentum, epsilon=bn_epsilon)
        self.act = make_act(act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.bn(self.conv(x)))


class SEModule(nn.Layer):
    """Squeeze-and-excitation: global pool, 1x1 reduce, activation, 1x1 expand, gate, rescale the input.

    Args:
        channels: input (and output) channels.
        reduction: ``reduced = channels // reduction`` unless ``reduced_channels`` is given.
        reduced_channels: explicit bottleneck width (MobileNetV3 rounds it with make_divisible).
        act: activation between the two 1x1 convolutions.
        gate: the gating activation ("hardsigmoid" for PP-LCNet, "sigmoid" for SE-ResNet, or a layer such as
            ``HardSigmoid(0.2, 0.5)`` for MobileNetV3).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 4,
        *,
        reduced_channels: int | None = None,
        act: ActSpec = "relu",
        gate: ActSpec = "hardsigmoid",
    ) -> None:
        super().__init__()
        reduced = reduced_channels if reduced_channels is not None else channels // reduction
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.conv1 = nn.Conv2D(channels, reduced, 1)
        self.act = make_act(act)
        self.conv2 = nn.Conv2D(reduced, channels, 1)
        self.gate = make_act(gate)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        w = self.gate(self.conv2(self.act(self.conv1(self.avg_pool(x)))))
        return x * w


class LearnableAffineBlock(nn.Layer):
    """``scale * x + bias`` with two learnable scalars (PP-HGNetV2's "LAB", used by its smallest variants)."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0) -> None:
        super().__init__()
        self.scale = self.create_parameter([1], default_initializer=nn.initializer.Constant(scale))
        self.bias = self.create_parameter([1], default_initializer=nn.initializer.Constant(bias))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.scale * x + self.bias


class PooledConvHead(nn.Layer):
    """The PP-LCNet / PP-HGNet / MobileNetV3 head: global pool, 1x1 conv "expand", activation, dropout, linear.

    Dropout uses ``downscale_in_infer`` as PaddleClas does, so the exported graph keeps its ``scale`` op.

    Args:
        in_channels: channels of the last feature map.
        hidden_channels: width of the 1x1 expansion (1280 for PP-LCNet, 2048 for PP-HGNet).
        num_classes: output logits.
        act: activation after the expansion.
        dropout: drop probability (0 removes the layer).
        bias: whether the expansion convolution has a bias.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        num_classes: int = 1000,
        *,
        act: ActSpec = "hardswish",
        dropout: float = 0.2,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.last_conv = nn.Conv2D(in_channels, hidden_channels, 1, bias_attr=None if bias else False)
        self.act = make_act(act)
        self.dropout = nn.Dropout(p=dropout, mode="downscale_in_infer") if dropout > 0 else nn.Identity()
        self.flatten = nn.Flatten(start_axis=1, stop_axis=-1)
        self.classifier = nn.Linear(hidden_channels, num_classes)

    def features(self, x: paddle.Tensor) -> paddle.Tensor:
        """The pooled, expanded feature vector before the classifier (N, hidden_channels)."""
        return self.flatten(self.dropout(self.act(self.last_conv(self.avg_pool(x)))))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(self.features(x))


class SoftmaxOutput(nn.Layer):
    """Wrap a logits network with the softmax PaddleClas appends when it exports an inference model."""

    def __init__(self, net: nn.Layer, axis: int = -1) -> None:
        super().__init__()
        self.net = net
        self.axis = axis

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.softmax(self.net(x), axis=self.axis)
