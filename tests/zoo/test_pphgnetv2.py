"""PP-HGNetV2 B0-B6: sizes as published, the "SAME"-padded stem, LAB only in B0-B3, a decisive export.

PaddleClas publishes no parameter counts for PP-HGNetV2; timm's model cards for its port of the same
PaddleClas weights do (trainable parameters; GMACs = convolution and linear multiply-accumulates at 224):
B0 6.0 M / 0.3, B1 6.3 / 0.5, B2 11.2 / 1.1, B3 16.3 / 1.8, B4 19.8, B5 39.6 / 6.6, B6 75.3.
B4 and B6 are cross-checked with PaddleX's storage sizes (70.4 and 268.4 MB at 3.55 MB per M params).
"""

from __future__ import annotations

import pytest

from tests.zoo import seeded_checks

PUBLISHED_PARAMS_M = {
    "PP-HGNetV2-B0": 6.0,
    "PP-HGNetV2-B1": 6.3,
    "PP-HGNetV2-B2": 11.2,
    "PP-HGNetV2-B3": 16.3,
    "PP-HGNetV2-B4": 19.8,
    "PP-HGNetV2-B5": 39.6,
    "PP-HGNetV2-B6": 75.3,
}
PUBLISHED_GMACS = {"PP-HGNetV2-B0": 0.3, "PP-HGNetV2-B1": 0.5, "PP-HGNetV2-B2": 1.1, "PP-HGNetV2-B3": 1.8}
STORAGE_MB = {"PP-HGNetV2-B4": 70.4, "PP-HGNetV2-B6": 268.4}


def _models():
    from hpi.zoo.catalogue import pphgnetv2

    return {m.name: m for m in pphgnetv2.MODELS}


def _lazy_params(name: str, include_bn_stats: bool = False) -> float:
    """Parameter count from shapes only (``paddle.LazyGuard`` allocates nothing), in millions."""
    import paddle

    from hpi.zoo.nets.fidelity import count_params

    with paddle.LazyGuard():
        net = _models()[name].build()
    return count_params(net, include_bn_stats=include_bn_stats) / 1e6


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS_M))
def test_params_match_published(name):
    assert abs(_lazy_params(name) - PUBLISHED_PARAMS_M[name]) <= 0.05


@pytest.mark.parametrize("name", list(STORAGE_MB))
def test_params_consistent_with_paddlex_storage(name):
    expected = STORAGE_MB[name] / 3.55
    assert abs(_lazy_params(name, include_bn_stats=True) - expected) <= 0.03 * expected


@pytest.mark.parametrize("name", list(PUBLISHED_GMACS))
def test_macs_match_published(name):
    from hpi.zoo.nets.fidelity import count_flops

    gmacs = count_flops(_models()[name].build(), 224, convention="macs") / 1e9
    assert abs(gmacs - PUBLISHED_GMACS[name]) <= 0.05


def test_lab_only_in_small_sizes():
    import paddle

    from hpi.zoo.nets.layers import LearnableAffineBlock

    for name in _models():
        with paddle.LazyGuard():
            net = _models()[name].build()
        has_lab = any(isinstance(m, LearnableAffineBlock) for m in net.sublayers())
        assert has_lab == (name in ("PP-HGNetV2-B0", "PP-HGNetV2-B1", "PP-HGNetV2-B2", "PP-HGNetV2-B3")), name


def test_stem_and_stages_keep_paddleclas_shapes():
    """The 2x2 "SAME" convs and pool keep the stem at stride 4; stages reach stride 32."""
    import paddle

    from hpi.zoo.nets.pphgnetv2 import VARIANTS, PPHGNetV2Backbone, StemBlock

    stem = StemBlock(16, 16, use_lab=True)
    stem.eval()
    backbone = PPHGNetV2Backbone(VARIANTS["B0"], return_stages=True)
    backbone.eval()
    with paddle.no_grad():
        assert tuple(stem(paddle.rand([1, 3, 224, 224])).shape) == (1, 16, 56, 56)
        maps = backbone(paddle.rand([1, 3, 224, 224]))
    assert [tuple(m.shape) for m in maps] == [
        (1, 64, 56, 56),
        (1, 256, 28, 28),
        (1, 512, 14, 14),
        (1, 1024, 7, 7),
    ]


def test_export_loads_runs_and_is_decisive(tmp_path):
    directory = tmp_path / "PP-HGNetV2-B0"
    report = seeded_checks.export("PP-HGNetV2-B0", directory)
    assert report.min_margin is not None and report.min_margin >= 2.0 - 1e-3
    seeded_checks.check_exported_classifier(directory, "PP-HGNetV2-B0")


@pytest.mark.slow
def test_b4_export_is_decisive(tmp_path):
    directory = tmp_path / "PP-HGNetV2-B4"
    seeded_checks.export("PP-HGNetV2-B4", directory)
    seeded_checks.check_exported_classifier(directory, "PP-HGNetV2-B4")
