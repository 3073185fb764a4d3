"""How closely a zoo build matches the published architecture: parameter and FLOP counts.

A seeded build is only a stand-in for the official weights if its graph is the same size, so each family's
tests compare these counts with the figures PaddleClas (or timm, where PaddleClas publishes none) quotes.

Conventions, chosen to match the published tables:

* :func:`count_params` counts trainable parameters (timm's "Params (M)"). PaddleClas' tables come from
  ``paddle.flops``/``paddle.summary``, which also count BatchNorm's running mean and variance (Paddle stores
  them as non-trainable parameters): pass ``include_bn_stats=True`` to compare with those.
* :func:`count_flops` counts multiply-accumulates, not 2x MACs: by default in ``paddle.flops``' convention,
  which is what PaddleClas' "FLOPs" column is (PP-LCNet_x1_0: 160.81 M), or, with ``convention="macs"``,
  only convolution and linear MACs as timm's "GMACs" (PP-LCNet_x1_0: 0.16). ``paddle.flops`` itself is not
  used: it prints to stdout and fails under numpy 2 in Paddle 3.3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import paddle
from paddle import nn


def count_params(layer: nn.Layer, *, include_bn_stats: bool = False) -> int:
    """Number of parameters in ``layer``.

    Args:
        layer: any Paddle layer.
        include_bn_stats: also count BatchNorm running mean and variance, as PaddleClas' tables do.
    """
    total = 0
    for p in layer.parameters():
        if p.stop_gradient and not include_bn_stats:
            continue
        total += int(np.prod(p.shape))
    if include_bn_stats:
        for sub in layer.sublayers(include_self=True):
            if isinstance(sub, nn.layer.norm._BatchNormBase):
                # Paddle >= 2.6 keeps the running statistics as buffers, older versions as frozen parameters.
                for stat in (sub._mean, sub._variance):
                    if not any(stat is p for p in layer.parameters()):
                        total += int(np.prod(stat.shape))
    return total


FlopConvention = Literal["paddle", "macs"]


def count_flops(
    layer: nn.Layer, input_size: int | tuple[int, int], *, convention: FlopConvention = "paddle"
) -> int:
    """Operations of one forward pass on a 1x3xHxW input, counted as PaddleClas or timm count them.

    Args:
        layer: the network; run once in eval mode on zeros, then restored to its previous mode.
        input_size: H (= W) or (H, W).
        convention: ``"paddle"`` reproduces ``paddle.flops`` (the figure PaddleClas quotes as FLOPs):
            convolution multiply-accumulates plus one op per output for a bias, 2 per element for eval-mode
            BatchNorm, linear multiply-accumulates, pooling adds; activations count zero. ``"macs"`` counts only
            convolution and linear multiply-accumulates (timm's "GMACs").
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    paddle_style = convention == "paddle"
    total = [0]

    def conv_hook(m: nn.Layer, inputs: tuple[paddle.Tensor, ...], output: paddle.Tensor) -> None:
        per_output = int(np.prod(m.weight.shape[2:])) * int(inputs[0].shape[1]) // m._groups
        if paddle_style and m.bias is not None:
            per_output += 1
        total[0] += int(np.prod(output.shape)) * per_output

    def linear_hook(m: nn.Layer, inputs: tuple[paddle.Tensor, ...], output: paddle.Tensor) -> None:
        total[0] += int(np.prod(output.shape)) * int(m.weight.shape[0])

    def bn_hook(m: nn.Layer, inputs: tuple[paddle.Tensor, ...], output: paddle.Tensor) -> None:
        total[0] += 2 * int(np.prod(inputs[0].shape))

    def pool_hook(m: nn.Layer, inputs: tuple[paddle.Tensor, ...], output: paddle.Tensor) -> None:
        window = int(np.prod(np.array(inputs[0].shape[2:]) // np.array(output.shape[2:])))
        total[0] += int(np.prod(output.shape)) * (window + 1)

    hooks: list[tuple[type, Callable[..., None]]] = [
        (nn.layer.conv._ConvNd, conv_hook),
        (nn.Linear, linear_hook),
    ]
    if paddle_style:
        hooks += [(nn.layer.norm._BatchNormBase, bn_hook), (nn.AdaptiveAvgPool2D, pool_hook)]
    handles = []
    for sub in layer.sublayers(include_self=True):
        for kind, hook in hooks:
            if isinstance(sub, kind):
                handles.append(sub.register_forward_post_hook(hook))
                break
    was_training = layer.training
    layer.eval()
    try:
        with paddle.no_grad():
            layer(paddle.zeros([1, 3, h, w], dtype="float32"))
    finally:
        for handle in handles:
            handle.remove()
        if was_training:
            layer.train()
    return total[0]
