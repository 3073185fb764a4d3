"""hpi/zoo/catalogue/mobilenetv4.py: catalogue, parameter counts against the published ones, FLOPs, output, export parity
for a conv model and a hybrid (attention) model."""

from __future__ import annotations

import pytest

pytest.importorskip("paddle", reason="building zoo networks needs paddlepaddle")

from hpi.zoo.catalogue.mobilenetv4 import MODELS  # noqa: E402
from tests.zoo.family_checks import (  # noqa: E402
    assert_parity,
    assert_published_params,
    check_classifier_output,
    export_parity,
    make_decisive,
)

BY_NAME = {m.name: m for m in MODELS}
LIGHT = {
    "MobileNetV4_conv_small",
    "MobileNetV4_conv_medium",
    "MobileNetV4_hybrid_medium",
}  # the rest are slow


def test_catalogue_has_paddlex_names_and_preprocessing():
    assert set(BY_NAME) == {
        "MobileNetV4_conv_small",
        "MobileNetV4_conv_medium",
        "MobileNetV4_conv_large",
        "MobileNetV4_hybrid_medium",
        "MobileNetV4_hybrid_large",
    }
    sizes = {name: (m.input_size, m.resize_short) for name, m in BY_NAME.items()}
    assert sizes["MobileNetV4_conv_small"] == (224, 256)
    assert sizes["MobileNetV4_hybrid_medium"] == (256, 256)
    assert sizes["MobileNetV4_hybrid_large"] == (448, 448)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_params_match_published(model):
    assert_published_params(model)


def test_flops_match_published():
    from hpi.zoo.nets.fidelity import count_flops

    # conv_small at 224: 0.2 GMACs (timm's model card, one decimal)
    macs = count_flops(BY_NAME["MobileNetV4_conv_small"].build().net, 224, convention="macs")
    assert macs / 1e9 == pytest.approx(0.2, abs=0.05)
    # hybrid_medium at 256: 1.23 G in PaddleClas' table, which (paddle.flops) leaves out the attention matmuls
    macs = count_flops(BY_NAME["MobileNetV4_hybrid_medium"].build().net, 256, convention="macs")
    assert macs / 1e9 == pytest.approx(1.23, rel=0.01)


@pytest.mark.parametrize(
    "model",
    [pytest.param(m, marks=() if m.name in LIGHT else pytest.mark.slow) for m in MODELS],
    ids=lambda m: m.name,
)
def test_output_is_a_distribution_over_1000_classes(model):
    check_classifier_output(model)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNetV4_conv_small", "MobileNetV4_hybrid_medium"])
def test_export_parity_paddle_inference_onednn_onnxruntime(tmp_path, name):
    import paddle

    paddle.seed(0)
    model = BY_NAME[name]
    net = model.build().net
    make_decisive(net)
    result = export_parity(net, model.input_size, tmp_path)
    assert_parity(result, engines=("paddle", "onednn", "onnxruntime"))
