"""PP-LCNet: the builds match PaddleClas' published sizes, the backbone serves PicoDet, exports run and decide.

Published figures: PaddleClas ``docs/zh_CN/models/ImageNet1k/PP-LCNet.md`` (FLOPs in M and Params in M, both
counted by ``paddle.flops``, so BatchNorm running statistics are included in the parameters); x1_0 and x2_5 are
quoted more precisely (160.81 M / 2.96 M and 906.49 M / 9.04 M) in PaddleClas' SSLD model table.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.zoo import seeded_checks

# name: (params in M with BN statistics, FLOPs in M), as PaddleClas publishes them
PUBLISHED = {
    "PP-LCNet_x0_25": (1.5, 18),
    "PP-LCNet_x0_35": (1.6, 29),
    "PP-LCNet_x0_5": (1.9, 47),
    "PP-LCNet_x0_75": (2.4, 99),
    "PP-LCNet_x1_0": (2.96, 160.81),
    "PP-LCNet_x1_5": (4.5, 342),
    "PP-LCNet_x2_0": (6.5, 590),
    "PP-LCNet_x2_5": (9.04, 906.49),
}
PARAM_TOL_M = 0.05  # the published figures are rounded to 0.1 M (0.01 M for x1_0 and x2_5)
FLOP_TOL_M = 0.5  # rounded to 1 M (x1_0 and x2_5 to 0.01 M)


def _models():
    from hpi.zoo.catalogue import pplcnet

    return {m.name: m for m in pplcnet.MODELS}


def test_catalogue_has_every_paddlex_size():
    assert list(_models()) == list(PUBLISHED)
    assert all(
        m.family == "PP-LCNet" and m.input_size == 224 and m.resize_short == 256 for m in _models().values()
    )


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_size_matches_paddleclas(name):
    from hpi.zoo.nets.fidelity import count_flops, count_params

    params_m, flops_m = PUBLISHED[name]
    net = _models()[name].build()
    got_params = count_params(net, include_bn_stats=True) / 1e6
    got_flops = count_flops(net, 224) / 1e6
    assert abs(got_params - params_m) <= PARAM_TOL_M, (
        f"{name}: {got_params:.3f} M params, published {params_m}"
    )
    assert abs(got_flops - flops_m) <= FLOP_TOL_M, f"{name}: {got_flops:.2f} M FLOPs, published {flops_m}"


def test_x1_0_matches_exact_counts():
    """Regression guard: exact figures of the architecture as written (trainable params, timm-style MACs)."""
    from hpi.zoo.nets.fidelity import count_flops, count_params

    net = _models()["PP-LCNet_x1_0"].build()
    assert count_params(net) == 2_952_520
    assert count_flops(net, 224) == 160_808_128  # PaddleClas: 160.81 M
    assert count_flops(net, 224, convention="macs") == 155_700_480  # timm: 0.16 GMACs


def test_backbone_gives_picodet_feature_maps():
    """PP-ShiTuV2_det's PicoDet takes PP-LCNet x2.5's stride 8/16/32 maps (blocks4, blocks5, blocks6)."""
    import paddle

    from hpi.zoo.nets.pplcnet import PPLCNetBackbone

    backbone = PPLCNetBackbone(2.5, return_blocks=(4, 5, 6))
    backbone.eval()
    with paddle.no_grad():
        maps = backbone(paddle.rand([1, 3, 320, 320]))
    assert [tuple(m.shape) for m in maps] == [(1, 320, 40, 40), (1, 640, 20, 20), (1, 1280, 10, 10)]
    assert backbone.out_channels == [320, 640, 1280]
    with pytest.raises(ValueError, match="return_blocks"):
        PPLCNetBackbone(1.0, return_blocks=(7,))


def test_pooled_feature_before_classifier():
    import paddle

    from hpi.zoo.nets.pplcnet import PPLCNet

    net = PPLCNet(1.0)
    net.eval()
    with paddle.no_grad():
        assert tuple(net.forward_features(paddle.rand([2, 3, 224, 224])).shape) == (2, 1280)


def test_listing_the_family_does_not_import_paddle():
    code = "import sys, hpi.zoo.catalogue.pplcnet as m; assert m.MODELS; print('paddle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pplcnet") / "PP-LCNet_x0_25"
    report = seeded_checks.export("PP-LCNet_x0_25", directory)
    return directory, report


def test_export_loads_runs_and_is_decisive(exported):
    directory, report = exported
    assert report.min_margin is not None and report.min_margin >= 2.0 - 1e-3
    seeded_checks.check_exported_classifier(directory, "PP-LCNet_x0_25")


def test_export_matches_eager_network(exported):
    """Paddle Inference on the saved program gives what the seeded dygraph network gives."""
    import paddle

    from hpi.zoo.catalogue import pplcnet
    from hpi.zoo.seeding import build_seeded, preprocess_spec, seed_weights

    directory, _ = exported
    model = next(m for m in pplcnet.MODELS if m.name == "PP-LCNet_x0_25")
    with paddle.utils.unique_name.guard():
        net = build_seeded(model, 0)
        seed_weights(net, preprocess_spec(model), seed=0)
    batch = seeded_checks.preprocessed(directory, ("astronaut", "coffee"))
    with paddle.no_grad():
        eager = net(paddle.to_tensor(batch)).numpy()
    np.testing.assert_allclose(seeded_checks.paddle_inference(directory, batch), eager, rtol=1e-4, atol=1e-5)


def test_export_writes_paddlex_preprocessing(exported):
    import yaml

    directory, _ = exported
    cfg = yaml.safe_load((directory / "inference.yml").read_text())
    assert cfg["Global"] == {"model_name": "PP-LCNet_x0_25"}
    ops = cfg["PreProcess"]["transform_ops"]
    assert ops[0] == {"ResizeImage": {"resize_short": 256}}
    assert ops[1] == {"CropImage": {"size": 224}}
    assert ops[2]["NormalizeImage"]["mean"] == [0.485, 0.456, 0.406]
    assert ops[3] == {"ToCHWImage": None}
