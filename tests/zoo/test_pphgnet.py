"""PP-HGNet: sizes exactly as PaddleClas publishes them, PaddleX's resize sizes, a decisive export.

Published: PaddleClas ``docs/zh_CN/models/ImageNet1k/PP-HGNet.md`` and its model list: tiny 14.75 M / 4.54 G,
small 24.38 M / 8.53 G, base 71.62 M / 25.14 G (``paddle.flops`` counts: BN statistics in the params).
"""

from __future__ import annotations

import pytest

from tests.zoo import seeded_checks

PUBLISHED = {"PP-HGNet_tiny": (14.75, 4.54), "PP-HGNet_small": (24.38, 8.53), "PP-HGNet_base": (71.62, 25.14)}


def _models():
    from hpi.zoo.catalogue import pphgnet

    return {m.name: m for m in pphgnet.MODELS}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_size_matches_paddleclas(name):
    from hpi.zoo.nets.fidelity import count_flops, count_params

    params_m, flops_g = PUBLISHED[name]
    net = _models()[name].build()
    assert abs(count_params(net, include_bn_stats=True) / 1e6 - params_m) <= 0.01
    assert abs(count_flops(net, 224) / 1e9 - flops_g) <= 0.01


def test_resize_as_paddlex_runs_it():
    """PaddleX declares a PIL bicubic resize (232 for tiny, 236 otherwise) but executes OpenCV bilinear."""
    from hpi.zoo.seeding import preprocess_spec

    shorts = {name: m.resize_short for name, m in _models().items()}
    assert shorts == {"PP-HGNet_tiny": 232, "PP-HGNet_small": 236, "PP-HGNet_base": 236}
    spec = preprocess_spec(_models()["PP-HGNet_small"])
    assert spec.interpolation == "LINEAR" and spec.crop == (224, 224)
    assert _models()["PP-HGNet_small"].card.preprocessing.interpolation == "BICUBIC"  # declared, not executed


def test_stage_outputs():
    import paddle

    from hpi.zoo.nets.pphgnet import VARIANTS, PPHGNetBackbone

    backbone = PPHGNetBackbone(VARIANTS["tiny"], return_stages=True)
    backbone.eval()
    with paddle.no_grad():
        maps = backbone(paddle.rand([1, 3, 224, 224]))
    assert [tuple(m.shape) for m in maps] == [
        (1, 224, 56, 56),
        (1, 448, 28, 28),
        (1, 512, 14, 14),
        (1, 768, 7, 7),
    ]


@pytest.mark.slow
def test_export_loads_runs_and_is_decisive(tmp_path):
    directory = tmp_path / "PP-HGNet_tiny"
    seeded_checks.export("PP-HGNet_tiny", directory)
    seeded_checks.check_exported_classifier(directory, "PP-HGNet_tiny")
