"""Seeding and saving: labels, preprocessing per family, BatchNorm calibration, decisive classifiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_imagenet_labels_in_paddlex_wording():
    from hpi.zoo.seeding import imagenet1k_labels

    labels = imagenet1k_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench, Tinca tinca"
    assert labels[296] == "ice bear, polar bear, Ursus Maritimus, Thalarctos maritimus"
    assert labels[999] == "toilet tissue, toilet paper, bathroom tissue"
    assert labels[134] == labels[517] == "crane"  # the bird and the machine share a lemma, as in PaddleClas


def test_preprocess_spec_is_the_cards_with_a_declared_pil_filter_executed_as_paddlex_does():
    """The zoo writes what PaddleX executes: the card's preprocessing, except that a declared PIL resize runs as
    OpenCV bilinear (PaddleX's predictor ignores the PIL filter)."""
    from hpi.zoo import zoo_models
    from hpi.zoo.seeding import preprocess_spec

    models = zoo_models()
    plain = preprocess_spec(models["PP-LCNet_x1_0"])
    assert (plain.resize_short, plain.crop, plain.interpolation) == (256, (224, 224), "LINEAR")
    hgnet = models["PP-HGNetV2-B4"]
    assert (hgnet.card.preprocessing.resize_backend, hgnet.card.preprocessing.interpolation) == ("pil", "BICUBIC")
    spec = preprocess_spec(hgnet)
    assert (spec.resize_short, spec.interpolation, spec.resize_backend) == (232, "LINEAR", "cv2")
    rec = preprocess_spec(models["PP-ShiTuV2_rec"])
    assert rec.resize_to == (224, 224) and rec.crop is None


def test_the_zoo_builds_exactly_the_models_whose_cards_say_buildable():
    """A zoo record reads its facts from its card, so each needs one, and the card's ``buildable`` flag is true."""
    from hpi.cards import load_cards
    from hpi.zoo import zoo_models

    buildable = {name for name, card in load_cards().items() if card.buildable}
    assert set(zoo_models()) == buildable


def _tiny_net():
    from paddle import nn

    from hpi.zoo.nets.layers import ConvBNAct, PooledConvHead, SEModule, SoftmaxOutput

    net = SoftmaxOutput(
        nn.Sequential(
            ConvBNAct(3, 16, 3, 2, act="hardswish"),
            ConvBNAct(16, 16, 3, 2, groups=16, act="relu"),
            SEModule(16),
            ConvBNAct(16, 32, 1),
            PooledConvHead(32, 64, 1000),
        )
    )
    net.eval()
    return net


def test_calibration_sets_batchnorm_statistics_to_the_batch():
    import paddle

    from hpi.zoo.seeding import calibrate_batchnorm

    paddle.seed(0)
    net = _tiny_net()
    batch = np.random.default_rng(0).normal(size=(6, 3, 32, 32)).astype(np.float32)
    first_bn = net.net[0].bn
    calibrate_batchnorm(net, batch)
    with paddle.no_grad():
        conv_out = net.net[0].conv(paddle.to_tensor(batch)).numpy()
    np.testing.assert_allclose(first_bn._mean.numpy(), conv_out.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(first_bn._variance.numpy(), conv_out.var(axis=(0, 2, 3)), rtol=1e-3, atol=1e-5)
    assert not first_bn.training and first_bn._momentum == 0.9  # restored


def test_seeded_classifier_is_decisive_on_its_photos():
    import paddle

    from hpi.preprocess.spec import PreprocessSpec
    from hpi.zoo.seeding import calibration_views, seed_weights

    spec = PreprocessSpec(
        256, None, "LINEAR", (224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255, True
    )
    paddle.seed(0)
    net = _tiny_net()
    report = seed_weights(net, spec, seed=0)
    assert report.calibration.startswith("skimage:") and len(report.classes) == 4
    assert report.min_margin >= 2.0 - 1e-3

    from skimage import data

    images = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    batch, _ = calibration_views(images, spec)
    with paddle.no_grad():
        probs = net(paddle.to_tensor(batch)).numpy()
    top = np.sort(probs, axis=1)[:, ::-1]
    assert (top[:, 0] > 7.0 * top[:, 1]).all()  # margin 2 in logits: e^2 = 7.4


def test_synthetic_calibration_images_are_deterministic():
    from hpi.zoo.seeding import _synthetic_images

    a, b = _synthetic_images(3, 2), _synthetic_images(3, 2)
    assert all(x.shape == (384, 512, 3) and x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], _synthetic_images(4, 1)[0])


def test_find_classifier_prefers_the_named_layer():
    from paddle import nn

    from hpi.errors import HpiInternalError
    from hpi.zoo.seeding import find_classifier

    class Net(nn.Layer):
        def __init__(self):
            super().__init__()
            self.classifier = nn.Linear(4, 3)
            self.proj = nn.Linear(3, 3)

    net = Net()
    assert find_classifier(net) is net.classifier
    with pytest.raises(HpiInternalError, match="no nn.Linear"):
        find_classifier(nn.Sequential(nn.ReLU()))


def test_same_seed_same_weights(tmp_path):
    """Two exports with one seed in fresh processes give byte-identical weights (content hashes match)."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from tests.zoo.seeded_checks import export; "
        "export('PP-LCNet_x0_25', Path(sys.argv[1]), seed=5)"
    )
    repo = Path(__file__).resolve().parents[2]
    for name in ("a", "b"):
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / name)], check=True, capture_output=True, cwd=repo
        )
    for f in ("inference.json", "inference.pdiparams", "inference.yml"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
