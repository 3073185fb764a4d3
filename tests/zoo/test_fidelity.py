"""Parameter and FLOP counting conventions, on layers whose counts are known by hand."""

from __future__ import annotations


def _net():
    from paddle import nn

    return nn.Sequential(
        nn.Conv2D(3, 8, 3, padding=1, bias_attr=False),  # 8 x 3 x 3 x 3 = 216 weights
        nn.BatchNorm2D(8),  # 16 trainable + 16 running statistics
        nn.ReLU(),
        nn.Conv2D(8, 8, 3, padding=1, groups=8),  # depthwise: 72 weights + 8 bias
        nn.AdaptiveAvgPool2D(1),
        nn.Flatten(),
        nn.Linear(8, 10),  # 80 + 10
    )


def test_count_params():
    from hpi.zoo.nets.fidelity import count_params

    net = _net()
    assert count_params(net) == 216 + 16 + 72 + 8 + 90
    assert count_params(net, include_bn_stats=True) == 216 + 32 + 72 + 8 + 90


def test_count_flops_conventions():
    from hpi.zoo.nets.fidelity import count_flops

    net = _net()
    hw = 16 * 16
    conv1, dw, linear = 8 * hw * 27, 8 * hw * 9, 80
    assert count_flops(net, 16, convention="macs") == conv1 + dw + linear
    # paddle.flops: + conv bias (1 per output), BN (2 per element), adaptive pool (window + 1 per output)
    assert count_flops(net, 16) == conv1 + dw + 8 * hw + 2 * 8 * hw + 8 * (hw + 1) + linear
    assert count_flops(net, (16, 16)) == count_flops(net, 16)
