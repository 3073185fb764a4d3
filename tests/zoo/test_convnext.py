"""hpi/zoo/catalogue/convnext.py: catalogue, parameter counts against the published ones, FLOPs, output, export parity."""

from __future__ import annotations

import pytest

pytest.importorskip("paddle", reason="building zoo networks needs paddlepaddle")

from hpi.zoo.catalogue.convnext import MODELS  # noqa: E402
from tests.zoo.family_checks import (  # noqa: E402
    assert_parity,
    assert_published_params,
    check_classifier_output,
    export_parity,
    make_decisive,
)

BY_NAME = {m.name: m for m in MODELS}
LIGHT = {"ConvNeXt_tiny"}  # built and run in the default test run; the rest are marked slow


def test_catalogue_has_paddlex_names_and_preprocessing():
    assert set(BY_NAME) == {
        "ConvNeXt_tiny",
        "ConvNeXt_small",
        "ConvNeXt_base_224",
        "ConvNeXt_base_384",
        "ConvNeXt_large_224",
        "ConvNeXt_large_384",
    }
    for model in MODELS:
        expected = (384, 384) if model.name.endswith("_384") else (224, 256)
        assert (model.input_size, model.resize_short) == expected
        assert model.card.preprocessing.resize_backend == "pil"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_params_match_published(model):
    assert_published_params(model)


def test_flops_match_paddleclas():
    from hpi.zoo.nets.fidelity import count_flops

    # PaddleClas' table: ConvNeXt_tiny 4.458 GFLOPs (paddle.flops convention)
    flops = count_flops(BY_NAME["ConvNeXt_tiny"].build().net, 224)
    assert flops / 1e9 == pytest.approx(4.458, rel=0.005)


@pytest.mark.parametrize(
    "model",
    [pytest.param(m, marks=() if m.name in LIGHT else pytest.mark.slow) for m in MODELS],
    ids=lambda m: m.name,
)
def test_output_is_a_distribution_over_1000_classes(model):
    check_classifier_output(model)


@pytest.mark.slow
def test_export_parity_paddle_inference_onnxruntime(tmp_path):
    import paddle

    paddle.seed(0)
    net = BY_NAME["ConvNeXt_tiny"].build().net
    make_decisive(net)
    # oneDNN is checked on its own below: it miscomputes ConvNeXt's channel LayerNorm
    assert_parity(export_parity(net, 224, tmp_path, onednn=False))


@pytest.mark.xfail(
    reason="Paddle Inference 3.3.1 with oneDNN: d = x - mean; d.pow(2) overwrites d when d is used again, so "
    "ConvNeXt's channels-first LayerNorm (PaddleClas' formulation) comes out wrong",
    raises=AssertionError,
    strict=True,  # once a Paddle release fixes it, the pass fails the run and this note is revisited
)
def test_onednn_channel_layernorm_matches_eager(tmp_path):
    import paddle

    from hpi.zoo.nets.convnext import ChannelLayerNorm

    paddle.seed(0)
    result = export_parity(ChannelLayerNorm(96), 32, tmp_path, channels=96, onednn=True)
    assert result["onednn"] <= 1e-4, f"oneDNN max abs diff {result['onednn']:.3g}"
