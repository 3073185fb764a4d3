"""hpi/zoo/catalogue/starnet.py: catalogue, parameter counts against the published ones, FLOPs, output, export parity."""

from __future__ import annotations

import pytest

pytest.importorskip("paddle", reason="building zoo networks needs paddlepaddle")

from hpi.zoo.catalogue.starnet import MODELS  # noqa: E402
from tests.zoo.family_checks import (  # noqa: E402
    assert_parity,
    assert_published_params,
    check_classifier_output,
    export_parity,
    make_decisive,
)

BY_NAME = {m.name: m for m in MODELS}


def test_catalogue_has_paddlex_names_and_preprocessing():
    assert set(BY_NAME) == {"StarNet-S1", "StarNet-S2", "StarNet-S3", "StarNet-S4"}
    for model in MODELS:
        assert (model.input_size, model.resize_short) == (224, 224)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_params_match_published(model):
    assert_published_params(model)


def test_flops_match_published():
    from hpi.zoo.nets.fidelity import count_flops

    # StarNet-S1: 425M multiply-accumulates (ma-xu/Rewrite-the-Stars model table)
    macs = count_flops(BY_NAME["StarNet-S1"].build().net, 224, convention="macs")
    assert macs / 1e6 == pytest.approx(425, rel=0.02)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_output_is_a_distribution_over_1000_classes(model):
    check_classifier_output(model)


@pytest.mark.slow
def test_export_parity_paddle_inference_onednn_onnxruntime(tmp_path):
    import paddle

    paddle.seed(0)
    net = BY_NAME["StarNet-S1"].build().net
    make_decisive(net)
    assert_parity(export_parity(net, 224, tmp_path), engines=("paddle", "onednn", "onnxruntime"))
