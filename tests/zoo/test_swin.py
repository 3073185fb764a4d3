"""hpi/zoo/catalogue/swin.py: catalogue, parameter counts against the published ones, FLOPs, window masks, output, export
parity."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("paddle", reason="building zoo networks needs paddlepaddle")

from hpi.zoo.catalogue.swin import MODELS  # noqa: E402
from tests.zoo.family_checks import (  # noqa: E402
    assert_parity,
    assert_published_params,
    check_classifier_output,
    export_parity,
    make_decisive,
)

BY_NAME = {m.name: m for m in MODELS}
TINY = "SwinTransformer_tiny_patch4_window7_224"
LIGHT = {TINY}  # built and run in the default test run; the rest are marked slow


def test_catalogue_has_paddlex_names_and_preprocessing():
    assert set(BY_NAME) == {
        f"SwinTransformer_{size}_patch4_window{w}_{side}"
        for size, w, side in [
            ("tiny", 7, 224),
            ("small", 7, 224),
            ("base", 7, 224),
            ("base", 12, 384),
            ("large", 7, 224),
            ("large", 12, 384),
        ]
    }
    for model in MODELS:
        expected = (384, 438) if model.name.endswith("_384") else (224, 256)
        assert (model.input_size, model.resize_short) == expected
        assert model.card.preprocessing.resize_backend == "pil"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_params_match_published(model):
    assert_published_params(model)


def test_flops_match_published():
    from hpi.zoo.nets.fidelity import count_flops

    # Swin-T: 4.5 GFLOPs (multiply-accumulates) in the paper, attention matmuls included. count_flops sees the
    # linear layers only, so add q @ k^T and attn @ v: 2 * tokens * window^2 * channels per block.
    macs = count_flops(BY_NAME[TINY].build().net, 224, convention="macs")
    stages = [(56 * 56, 96, 2), (28 * 28, 192, 2), (14 * 14, 384, 6), (7 * 7, 768, 2)]
    attention = sum(2 * tokens * 49 * channels * depth for tokens, channels, depth in stages)
    assert (macs + attention) / 1e9 == pytest.approx(4.5, abs=0.05)


def test_shift_mask_separates_regions_only():
    from hpi.zoo.nets.swin import relative_position_index, shifted_window_mask

    mask = shifted_window_mask(14, 7, 3)
    assert mask.shape == (4, 49, 49)
    assert not mask[0].any()  # the top-left window holds one region after the shift
    assert (mask[3] < 0).mean() > 0.5  # the bottom-right window mixes four regions
    assert np.array_equal(mask, mask.transpose(0, 2, 1))
    index = relative_position_index(7)
    assert index.min() == 0 and index.max() == 13 * 13 - 1
    assert (np.diag(index) == index[0, 0]).all()  # zero offset maps to one row


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
    net = BY_NAME[TINY].build().net
    make_decisive(net)
    assert_parity(export_parity(net, 224, tmp_path), engines=("paddle", "onednn", "onnxruntime"))
