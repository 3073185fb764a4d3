"""hpi/zoo/catalogue/fasternet.py: catalogue, parameter counts against the published ones, FLOPs, output, export parity."""

from __future__ import annotations

import pytest

pytest.importorskip("paddle", reason="building zoo networks needs paddlepaddle")

from hpi.zoo.catalogue.fasternet import MODELS  # noqa: E402
from tests.zoo.family_checks import (  # noqa: E402
    assert_parity,
    assert_published_params,
    check_classifier_output,
    export_parity,
    make_decisive,
)

BY_NAME = {m.name: m for m in MODELS}
LIGHT = {"FasterNet-T0", "FasterNet-T1", "FasterNet-T2"}  # run by default; S, M, L are marked slow
# Published GFLOPs (multiply-accumulates), Chen et al. 2023, Table 7
PUBLISHED_GMACS = {"FasterNet-T0": 0.34, "FasterNet-T1": 0.85, "FasterNet-T2": 1.91}


def test_catalogue_has_paddlex_names_and_preprocessing():
    assert set(BY_NAME) == {f"FasterNet-{v}" for v in ("T0", "T1", "T2", "S", "M", "L")}
    for model in MODELS:
        assert (model.input_size, model.resize_short) == (224, 256)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_params_match_published(model):
    assert_published_params(model)


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_flops_match_published(name):
    from hpi.zoo.nets.fidelity import count_flops

    macs = count_flops(BY_NAME[name].build().net, 224, convention="macs")
    assert macs / 1e9 == pytest.approx(PUBLISHED_GMACS[name], rel=0.02)


@pytest.mark.parametrize(
    "model",
    [pytest.param(m, marks=() if m.name in LIGHT else pytest.mark.slow) for m in MODELS],
    ids=lambda m: m.name,
)
def test_output_is_a_distribution_over_1000_classes(model):
    check_classifier_output(model)


@pytest.mark.slow
def test_export_parity_paddle_inference_onednn_onnxruntime(tmp_path):
    import paddle

    paddle.seed(0)
    net = BY_NAME["FasterNet-T0"].build().net
    make_decisive(net)
    assert_parity(export_parity(net, 224, tmp_path), engines=("paddle", "onednn", "onnxruntime"))
