"""PP-LCNetV2: sizes as published, the deploy (re-parameterised) form, the reusable backbone, a decisive export.

Published: PaddleClas gives PPLCNetV2_base as 6.6 M params / 604 M FLOPs (``docs/zh_CN/models/ImageNet1k/
PP-LCNetV2.md``; 604.16 M in its SSLD table). For small and large PaddleClas publishes no counts; the check
uses PaddleX's model storage sizes (seed 002: 14.6 / 23.7 / 37.3 MB), which run at 3.55 MB per million
parameters (BN statistics included) across PP-LCNet, PP-LCNetV2_base and PP-HGNet, whose counts are published.
"""

from __future__ import annotations

import pytest

from tests.zoo import seeded_checks

MB_PER_M_PARAMS = 3.55
STORAGE_MB = {"PP-LCNetV2_small": 14.6, "PP-LCNetV2_base": 23.7, "PP-LCNetV2_large": 37.3}


def _models():
    from hpi.zoo.catalogue import pplcnetv2

    return {m.name: m for m in pplcnetv2.MODELS}


def test_base_matches_paddleclas():
    from hpi.zoo.nets.fidelity import count_flops, count_params

    net = _models()["PP-LCNetV2_base"].build()
    assert abs(count_params(net, include_bn_stats=True) / 1e6 - 6.6) <= 0.05
    assert abs(count_flops(net, 224) / 1e6 - 604.16) <= 1.0


@pytest.mark.parametrize("name", list(STORAGE_MB))
def test_size_consistent_with_paddlex_storage(name):
    from hpi.zoo.nets.fidelity import count_params

    params_m = count_params(_models()[name].build(), include_bn_stats=True) / 1e6
    expected = STORAGE_MB[name] / MB_PER_M_PARAMS
    assert abs(params_m - expected) <= 0.03 * expected, (
        f"{name}: {params_m:.2f} M params, storage implies {expected:.2f}"
    )


def test_deploy_form_has_folded_depthwise_convs():
    """Stages 3 and 4 carry one biased depthwise conv without BatchNorm, as after PaddleClas' re_parameterize."""
    from paddle import nn

    from hpi.zoo.nets.pplcnetv2 import PPLCNetV2

    net = PPLCNetV2(1.0)
    for stage in (net.backbone.stages[2], net.backbone.stages[3]):
        for block in stage:
            conv = block.dw_conv[0]
            assert isinstance(conv, nn.Conv2D) and conv.bias is not None
            assert conv._kernel_size == [5, 5] and conv._groups == conv._in_channels
    last = net.backbone.stages[3][1]
    assert last.use_shortcut  # stage 4's second block adds its input
    assert not net.backbone.stages[3][0].use_shortcut  # the strided first block cannot


def test_backbone_features_for_shitu():
    import paddle

    from hpi.zoo.nets.pplcnetv2 import PPLCNetV2, PPLCNetV2Backbone

    backbone = PPLCNetV2Backbone(1.0, (2, 2, 6, 2))
    backbone.eval()
    with paddle.no_grad():
        assert tuple(backbone(paddle.rand([1, 3, 224, 224])).shape) == (1, 1024, 7, 7)
        net = PPLCNetV2(1.0)
        net.eval()
        assert tuple(net.forward_features(paddle.rand([1, 3, 224, 224])).shape) == (1, 1280)
    assert backbone.out_channels == 1024


def test_export_loads_runs_and_is_decisive(tmp_path):
    directory = tmp_path / "PP-LCNetV2_small"
    report = seeded_checks.export("PP-LCNetV2_small", directory)
    assert report.min_margin is not None and report.min_margin >= 2.0 - 1e-3
    seeded_checks.check_exported_classifier(directory, "PP-LCNetV2_small")
