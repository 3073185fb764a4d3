"""hpi/zoo/catalogue/clip_vit.py: catalogue and preprocessing, parameter counts against the published ones, FLOPs, output,
export parity. Both models are heavy (86M and 304M weights): everything that builds real weights is slow."""

from __future__ import annotations

import pytest

pytest.importorskip("paddle", reason="building zoo networks needs paddlepaddle")

from hpi.zoo.catalogue.clip_vit import MODELS  # noqa: E402
from tests.zoo.family_checks import (  # noqa: E402
    assert_parity,
    assert_published_params,
    check_classifier_output,
    export_parity,
    make_decisive,
)

BY_NAME = {m.name: m for m in MODELS}
BASE = "CLIP_vit_base_patch16_224"


def test_catalogue_has_paddlex_names_and_preprocessing():
    assert set(BY_NAME) == {BASE, "CLIP_vit_large_patch14_224"}
    for model in MODELS:
        # PaddleX's configs: resize_short 256 (OpenCV bilinear), crop 224, ImageNet mean/std (the defaults)
        assert (model.input_size, model.resize_short) == (224, 256)
        assert not {"mean", "std", "interpolation", "resize_backend"} & set(model.extra)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_params_match_published(model):
    assert_published_params(model)


@pytest.mark.slow
def test_flops_match_published():
    from hpi.zoo.nets.fidelity import count_flops

    # ViT-B/16 at 224: 17.6 G multiply-accumulates (timm), attention matmuls included; count_flops sees the
    # linear layers and the patch convolution only, so add q @ k^T and attn @ v over 197 tokens in 12 blocks.
    macs = count_flops(BY_NAME[BASE].build().net, 224, convention="macs")
    attention = 12 * 2 * 197 * 197 * 768
    assert (macs + attention) / 1e9 == pytest.approx(17.6, abs=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_output_is_a_distribution_over_1000_classes(model):
    check_classifier_output(model)


@pytest.mark.slow
def test_export_parity_paddle_inference_onednn_onnxruntime(tmp_path):
    import paddle

    paddle.seed(0)
    net = BY_NAME[BASE].build().net
    make_decisive(net)
    assert_parity(export_parity(net, 224, tmp_path), engines=("paddle", "onednn", "onnxruntime"))
