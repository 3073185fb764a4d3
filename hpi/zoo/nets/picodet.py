"""PicoDet-LCNet x2.5: the network of PP-ShiTuV2's mainbody detector (PP-ShiTuV2_det).

PicoDet follows PaddleDetection's legacy ``picodet_lcnet_x2_5_640_mainbody`` config (Yu et al., 2021,
"PP-PicoDet", arXiv:2111.00902):

* backbone: PP-LCNet x2.5, the stride-8/16/32 maps (320, 640, 1280 channels);
* neck: CSP-PAN with 128 channels: a 1x1 conv per input, top-down and bottom-up CSP layers whose bottleneck is a
  1x1 conv and a (5x5 depthwise, 1x1) pair, and a fourth stride-64 level (two 5x5/2 depthwise-separable convs,
  one from the coarsest lateral map and one from the coarsest output, summed);
* head: per level four (5x5 depthwise, 1x1) conv pairs shared by classification and regression, then one 1x1
  conv to ``num_classes + 4 * (reg_max + 1)`` channels; sigmoid class scores; each box side is the expectation
  of a softmax over the bins 0..reg_max (GFL's distribution regression), decoded around cell centres;
* hard-swish everywhere.

With post-processing exported (as PaddleX does), the boxes are divided by ``scale_factor`` (so they are in
original-image pixels) and ``multiclass_nms3`` runs inside the graph.

The recognition network of PP-ShiTuV2 is :class:`hpi.zoo.nets.pplcnetv2.ShiTuRec`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from hpi.zoo.nets.layers import ConvBNAct
from hpi.zoo.nets.pplcnet import PPLCNetBackbone

FPN_STRIDES = (8, 16, 32, 64)
REG_MAX = 7  # box sides are distributions over the bins 0..REG_MAX, in units of the level's stride
NECK_CHANNELS = 128
BACKBONE_SCALE = 2.5
CLASS_PRIOR = 0.01  # initial foreground probability of the class bias

_ACT = "hardswish"


def upsample2x_nearest(x: paddle.Tensor) -> paddle.Tensor:
    """Nearest-neighbour 2x upsampling by expand + reshape, where PaddleDetection calls ``nn.Upsample(2)``.

    Paddle 3.3 stores the interpolation ops' ``scale`` as an array of doubles in a PIR program, which Paddle
    Inference cannot run under oneDNN ("ConvertPirAttribute2RuntimeAttribute not support
    pir::ArrayAttribute<pir::DoubleAttribute>") and paddle2onnx 2.1 cannot convert ("the 0th elementwise MUST
    be ir::FloatAttribute"). The result is identical; it costs one memory copy of a small map.
    """
    height, width = x.shape[2], x.shape[3]
    if height < 0 or width < 0:  # dynamic spatial shape
        height, width = paddle.shape(x)[2], paddle.shape(x)[3]
    return paddle.expand(x.unsqueeze([3, 5]), [-1, -1, -1, 2, -1, 2]).reshape([0, 0, height * 2, width * 2])


class DepthwisePointwise(nn.Layer):
    """PicoDet's "DPModule": KxK depthwise conv-BN-act, then 1x1 conv-BN-act."""

    def __init__(self, channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.dw = ConvBNAct(channels, channels, kernel_size, stride, groups=channels, act=_ACT)
        self.pw = ConvBNAct(channels, channels, 1, act=_ACT)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.pw(self.dw(x))


class CSPLayer(nn.Layer):
    """Cross-stage partial layer: half the channels through a bottleneck, half straight to the final 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.main_conv = ConvBNAct(in_channels, mid, 1, act=_ACT)
        self.short_conv = ConvBNAct(in_channels, mid, 1, act=_ACT)
        self.bottleneck = nn.Sequential(
            ConvBNAct(mid, mid, 1, act=_ACT), DepthwisePointwise(mid, kernel_size)
        )
        self.final_conv = ConvBNAct(2 * mid, out_channels, 1, act=_ACT)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        main = self.bottleneck(self.main_conv(x))
        return self.final_conv(paddle.concat([main, self.short_conv(x)], axis=1))


class CSPPAN(nn.Layer):
    """PAN over the backbone maps plus one extra stride-2 level; every output has ``channels`` channels."""

    def __init__(self, in_channels: Sequence[int], channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        n = len(in_channels)
        self.lateral = nn.LayerList([ConvBNAct(c, channels, 1, act=_ACT) for c in in_channels])
        self.top_down = nn.LayerList([CSPLayer(2 * channels, channels, kernel_size) for _ in range(n - 1)])
        self.downsample = nn.LayerList(
            [DepthwisePointwise(channels, kernel_size, stride=2) for _ in range(n - 1)]
        )
        self.bottom_up = nn.LayerList([CSPLayer(2 * channels, channels, kernel_size) for _ in range(n - 1)])
        self.extra_from_lateral = DepthwisePointwise(channels, kernel_size, stride=2)
        self.extra_from_output = DepthwisePointwise(channels, kernel_size, stride=2)

    def forward(self, feats: Sequence[paddle.Tensor]) -> list[paddle.Tensor]:
        # Indexing, not zip(strict=True): dy2static's zip does not take ``strict``.
        lateral = [conv(feats[i]) for i, conv in enumerate(self.lateral)]
        inner = [lateral[-1]]  # top-down, coarsest first; inner[0] is always the finest so far
        for k, idx in enumerate(range(len(lateral) - 1, 0, -1)):
            up = upsample2x_nearest(inner[0])
            inner.insert(0, self.top_down[k](paddle.concat([up, lateral[idx - 1]], axis=1)))
        outs = [inner[0]]
        for idx in range(len(lateral) - 1):
            down = self.downsample[idx](outs[-1])
            outs.append(self.bottom_up[idx](paddle.concat([down, inner[idx + 1]], axis=1)))
        outs.append(self.extra_from_lateral(lateral[-1]) + self.extra_from_output(outs[-1]))
        return outs


class PicoHead(nn.Layer):
    """Per level a (depthwise 5x5, pointwise) tower and a 1x1 predictor; decodes GFL boxes in input pixels."""

    def __init__(self, channels: int, num_classes: int, strides: Sequence[int], num_convs: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.towers = nn.LayerList(
            [
                nn.Sequential(
                    *[
                        layer
                        for _ in range(num_convs)
                        for layer in (
                            ConvBNAct(channels, channels, 5, groups=channels, act=_ACT),
                            ConvBNAct(channels, channels, 1, act=_ACT),
                        )
                    ]
                )
                for _ in self.strides
            ]
        )
        prior_bias = -float(np.log((1 - CLASS_PRIOR) / CLASS_PRIOR))
        self.predictors = nn.LayerList(
            [
                nn.Conv2D(
                    channels,
                    num_classes + 4 * (REG_MAX + 1),
                    1,
                    bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(prior_bias)),
                )
                for _ in self.strides
            ]
        )
        self.register_buffer("project", paddle.linspace(0, REG_MAX, REG_MAX + 1, dtype="float32"))

    def level_logits(self, feats: Sequence[paddle.Tensor]) -> list[paddle.Tensor]:
        """The raw prediction map of each level, [N, num_classes + 4 * (REG_MAX + 1), H, W]."""
        return [self.predictors[i](tower(feats[i])) for i, tower in enumerate(self.towers)]

    def forward(self, feats: Sequence[paddle.Tensor]) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Boxes [N, L, 4] (x1, y1, x2, y2 in input pixels) and scores [N, num_classes, L] over all levels."""
        scores, boxes = [], []
        for level, logits in enumerate(self.level_logits(feats)):
            stride = self.strides[level]
            cls_logit, reg = paddle.split(logits, [self.num_classes, 4 * (REG_MAX + 1)], axis=1)
            scores.append(F.sigmoid(cls_logit.flatten(2)))
            reg = reg.transpose([0, 2, 3, 1]).reshape([0, -1, 4, REG_MAX + 1])
            sides = paddle.matmul(F.softmax(reg, axis=-1), self.project)  # [N, H*W, 4] in cells
            height, width = paddle.shape(logits)[2], paddle.shape(logits)[3]
            ys = paddle.arange(0, height, dtype="float32") + 0.5
            xs = paddle.arange(0, width, dtype="float32") + 0.5
            grid_y, grid_x = paddle.meshgrid(ys, xs)
            centres = paddle.stack([grid_x, grid_y], axis=-1).reshape([-1, 2])
            left_top, right_bottom = paddle.split(sides, 2, axis=-1)
            boxes.append(paddle.concat([centres - left_top, centres + right_bottom], axis=-1) * float(stride))
        return paddle.concat(boxes, axis=1), paddle.concat(scores, axis=-1)


class PicoDet(nn.Layer):
    """PicoDet-LCNet. ``forward(image, scale_factor)`` with ``scale_factor`` = (resized / original) as (h, w).

    Args:
        num_classes: foreground classes (1 for PP-ShiTuV2's "foreground").
        backbone_scale: PP-LCNet width (2.5 in PP-ShiTuV2_det; PaddleDetection's other PicoDet-LCNet
            configs use 1.0 to 2.5 with the same neck and head).
        nms: ``multiclass_nms3`` settings as a dict of ``score_threshold``, ``nms_top_k``, ``keep_top_k``,
            ``nms_threshold`` and ``normalized``; the network then returns (boxes [M, 6], boxes_num [N]).
            ``None`` returns (boxes [N, L, 4], scores [N, num_classes, L]) instead, for NMS outside the graph.
    """

    def __init__(
        self,
        num_classes: int = 1,
        *,
        backbone_scale: float = BACKBONE_SCALE,
        nms: dict[str, float | int | bool] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = PPLCNetBackbone(backbone_scale, return_blocks=(4, 5, 6))
        self.neck = CSPPAN(self.backbone.out_channels, NECK_CHANNELS)
        self.head = PicoHead(NECK_CHANNELS, num_classes, FPN_STRIDES)
        self.nms = dict(nms) if nms is not None else None

    def features(self, image: paddle.Tensor) -> list[paddle.Tensor]:
        """The four neck maps (strides 8, 16, 32, 64)."""
        return self.neck(self.backbone(image))

    def forward(self, image: paddle.Tensor, scale_factor: paddle.Tensor):
        boxes, scores = self.head(self.features(image))
        scale_y, scale_x = paddle.split(scale_factor, 2, axis=-1)
        boxes = boxes / paddle.concat([scale_x, scale_y, scale_x, scale_y], axis=-1).reshape([-1, 1, 4])
        if self.nms is None:
            return boxes, scores
        out, _, boxes_num = paddle._C_ops.multiclass_nms3(
            boxes,
            scores,
            None,  # rois_num: boxes are per image, not a flat list
            float(self.nms["score_threshold"]),
            int(self.nms["nms_top_k"]),
            int(self.nms["keep_top_k"]),
            float(self.nms["nms_threshold"]),
            bool(self.nms["normalized"]),
            1.0,  # nms_eta: plain (non-adaptive) NMS
            -1,  # background_label: none, every class is foreground
        )
        return out, boxes_num


class DenseLogits(nn.Layer):
    """A detector's raw per-level prediction maps from the image alone (used to calibrate seeded weights)."""

    def __init__(self, detector: PicoDet) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: paddle.Tensor) -> list[paddle.Tensor]:
        return self.detector.head.level_logits(self.detector.features(image))
