"""hpi/models/classification.py: PaddleX's create_model / predict / result interface, inputs, bad input handling."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import cv2
import numpy as np
import pytest

import hpi
from hpi.errors import InvalidConfigError, InvalidInputError, PredictionError, UnknownModelError


@pytest.fixture(scope="module")
def model(toy_dir, tmp_path_factory):
    return hpi.create_model("ToyNet", toy_dir, device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture()
def image_files(photos, tmp_path):
    paths = []
    for name, img in photos.items():
        path = tmp_path / f"{name}.jpg"
        cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


def test_normal_mode_is_paddle_fp32(model):
    assert model.backend == "paddle" and model.choice.mode == "normal" and model.choice.precision == "fp32"


def test_result_fields_like_paddlex(model, photos):
    (res,) = list(model.predict(photos["chelsea"]))
    assert list(res.json["res"]) == ["input_path", "page_index", "class_ids", "scores", "label_names"]
    assert res["input_path"] is None and res["page_index"] is None
    assert len(res["class_ids"]) == 5 and res["scores"] == sorted(res["scores"], reverse=True)
    assert res["label_names"][0] == f"class_{res['class_ids'][0]}"
    assert all(isinstance(s, float) for s in res["scores"])


def test_topk_argument(model, photos):
    (res,) = list(model.predict(photos["chelsea"], topk=2))
    assert len(res["class_ids"]) == 2


def test_every_input_kind(model, photos, image_files, tmp_path):
    directory = image_files[0].parent
    arr = photos["astronaut"]
    cases = {
        "array": (arr, 1),
        "path": (str(image_files[0]), 1),
        "pathlike": (image_files[0], 1),
        "directory": (str(directory), len(image_files)),
        "list": ([arr, str(image_files[1])], 2),
        "dict": ({"img": str(image_files[2])}, 1),
        "list of dirs": ([str(directory), str(directory)], 2 * len(image_files)),
    }
    for name, (value, count) in cases.items():
        results = list(model.predict(value, batch_size=2))
        assert len(results) == count, name
    by_dir = list(model.predict(str(directory)))
    assert [r["input_path"] for r in by_dir] == sorted(str(p) for p in image_files)


def test_array_and_file_agree(model, photos, tmp_path):
    path = tmp_path / "a.png"  # lossless, so decoded pixels equal the array
    cv2.imwrite(str(path), photos["coffee"])
    a, b = list(model.predict([photos["coffee"], str(path)], batch_size=2))
    assert a["class_ids"] == b["class_ids"] and a["scores"] == b["scores"]


def test_batch_size_does_not_change_results(model, image_files):
    one = [r["scores"] for r in model.predict([str(p) for p in image_files], batch_size=1)]
    four = [r["scores"] for r in model.predict([str(p) for p in image_files], batch_size=4)]
    np.testing.assert_allclose(one, four, atol=2e-5)


def test_url_input(model, image_files):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(image_files[0].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{image_files[0].name}"
        (res,) = list(model.predict(url))
        assert res["input_path"] == url
        (local,) = list(model.predict(str(image_files[0])))
        assert res["class_ids"] == local["class_ids"]
        with pytest.raises(PredictionError, match="404"):
            list(model.predict(url.replace(".jpg", "_missing.jpg")))
    finally:
        server.shutdown()


def test_bad_items_do_not_lose_the_batch(model, photos, image_files, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(image_files[0].read_bytes()[:200])
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is text")
    inputs = [str(image_files[0]), str(truncated), photos["rocket"], str(not_image),
              np.zeros((10, 10, 3), np.float32), str(image_files[1])]
    got = []
    with pytest.raises(PredictionError) as info:
        for res in model.predict(inputs, batch_size=3):
            got.append(res["input_path"])
    assert got == [str(image_files[0]), None, str(image_files[1])]
    failures = info.value.failures
    assert [f.index for f in failures] == [1, 3, 4]
    assert str(truncated) in str(failures[0].error)
    assert str(not_image) in str(failures[1].error)
    assert "input[4] (array): expected a uint8 image array, got dtype float32" in str(failures[2].error)
    assert isinstance(info.value, InvalidInputError)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/no/such/file.jpg", "no such file or directory"),
        (42, "unsupported input type int"),
        ({"image": "x"}, "needs the key 'img'"),
        ([], "no input images"),
        ("doc.pdf", "PDF input is not supported"),
    ],
)
def test_structural_input_errors_raise_at_once(model, value, message, tmp_path):
    if value == "doc.pdf":
        value = tmp_path / "doc.pdf"
        value.write_bytes(b"%PDF-1.4")
    with pytest.raises(InvalidInputError, match=message):
        list(model.predict(value))


@pytest.mark.parametrize(
    ("shape", "message"),
    [((5, 5, 2), "expected an HxWx3"), ((4, 4, 4, 3), "expected an HxWx3"), ((0, 5, 3), "empty image")],
)
def test_wrong_array_shape(model, shape, message):
    with pytest.raises(PredictionError, match=message):
        list(model.predict(np.zeros(shape, np.uint8)))


def test_grayscale_and_bgra_arrays_are_accepted(model, photos):
    gray = cv2.cvtColor(photos["astronaut"], cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(photos["astronaut"], cv2.COLOR_BGR2BGRA)
    assert len(list(model.predict([gray, bgra], batch_size=2))) == 2


def test_bad_arguments(model, photos):
    with pytest.raises(InvalidConfigError, match="batch_size"):
        list(model.predict(photos["rocket"], batch_size=0))
    with pytest.raises(InvalidConfigError, match="topk"):
        list(model.predict(photos["rocket"], topk=-1))


def test_print_save_json_and_img(model, image_files, tmp_path, capsys):
    (res,) = list(model.predict(str(image_files[0])))
    res.print()
    printed = json.loads(capsys.readouterr().out)
    assert printed == res.json
    out_dir = tmp_path / "out"
    json_path = res.save_to_json(out_dir)
    img_path = res.save_to_img(out_dir)
    assert json_path.name == f"{image_files[0].stem}_res.json"
    assert json.loads(json_path.read_text()) == res.json
    saved = cv2.imread(str(img_path))
    assert saved is not None and saved.shape[:2] == cv2.imread(str(image_files[0])).shape[:2]
    explicit = res.save_to_json(tmp_path / "named.json")
    assert explicit == tmp_path / "named.json"
    assert res.img["res"].size == (saved.shape[1], saved.shape[0])
    res.print(format_json=False)
    assert "'res'" in capsys.readouterr().out


def test_unknown_model_without_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HPI_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(UnknownModelError, match="hpi zoo build NoSuchModel"):
        hpi.create_model("NoSuchModel", device="cpu")


def test_forced_backend_and_hpi_config_errors(toy_dir, tmp_path):
    m = hpi.create_model("ToyNet", toy_dir, device="cpu", hpi_config={"backend": "openvino"}, cache_dir=tmp_path)
    assert m.backend == "openvino" and m.choice.mode == "explicit"
    with pytest.raises(InvalidConfigError, match="unknown key"):
        hpi.create_model("ToyNet", toy_dir, device="cpu", hpi_config={"backendd": "x"}, cache_dir=tmp_path)
    with pytest.raises(InvalidConfigError, match="unknown backend 'tflite'"):
        hpi.create_model("ToyNet", toy_dir, device="cpu", hpi_config={"backend": "tflite"}, cache_dir=tmp_path)
    with pytest.raises(InvalidConfigError, match="device 'tpu:0' is not understood"):
        hpi.create_model("ToyNet", toy_dir, device="tpu:0", cache_dir=tmp_path)


def test_onnx_model_normal_mode_uses_onnxruntime(orientation_dir, tmp_path):
    m = hpi.create_model("PP-LCNet_x1_0_doc_ori", orientation_dir, device="cpu", cache_dir=tmp_path)
    assert m.backend == "onnxruntime" and "Paddle Inference cannot load ONNX" in m.choice.reason


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_high_performance_mode_folds_preprocessing_into_the_graph(toy_dir, photos, image_files, tmp_path, backend):
    """use_hpip=True on ONNX Runtime / OpenVINO: uint8 NHWC in, normalisation inside the graph, same answers
    (reduced-scale decoding, which changes pixels by design, is off: this test is about the fold alone)."""
    normal = hpi.create_model("ToyNet", toy_dir, device="cpu", cache_dir=tmp_path)
    fast = hpi.create_model("ToyNet", toy_dir, device="cpu", use_hpip=True,
                            hpi_config={"backend": backend, "reduced_decode": False}, cache_dir=tmp_path)
    assert fast.engine.config.fold_preprocess and "folded" in fast.choice.reason
    assert fast.engine.input_dtypes[fast.engine.input_names[0]] == np.uint8
    inputs = [photos["chelsea"], *map(str, image_files)]
    for a, b in zip(normal.predict(inputs, batch_size=2), fast.predict(inputs, batch_size=2)):
        assert a["class_ids"][0] == b["class_ids"][0]
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-4)
    unfolded = hpi.create_model("ToyNet", toy_dir, device="cpu", use_hpip=True, cache_dir=tmp_path,
                                hpi_config={"backend": backend, "fold_preprocess": False, "reduced_decode": False})
    assert not unfolded.engine.config.fold_preprocess


def test_spin_wait_policy_reaches_onnxruntime(toy_dir, tmp_path):
    """Pipelines run models in turn on the same cores and switch spinning off; an explicit setting wins."""
    def config(hpi_config):
        return hpi.create_model("ToyNet", toy_dir, device="cpu", hpi_config=hpi_config, cache_dir=tmp_path).engine.config

    assert config({"backend": "onnxruntime"}).allow_spinning is True
    assert config({"backend": "onnxruntime", "spin_wait": False}).allow_spinning is False
    explicit = {"backend": "onnxruntime", "spin_wait": False, "backend_config": {"allow_spinning": True}}
    assert config(explicit).allow_spinning is True
    assert not hasattr(config({"backend": "paddle", "spin_wait": False}), "allow_spinning")


def test_create_model_returns_a_detector_for_a_detection_model(layout_det_dir, engine_cache):
    """PaddleX's create_model serves every task: the model's inference.yml picks the model type."""
    from hpi.models.detection import Detector

    with hpi.create_model("PicoDet_layout_1x_cdla", layout_det_dir, device="cpu", cache_dir=engine_cache) as det:
        assert isinstance(det, Detector)


@pytest.mark.parametrize("use_hpip", [False, True])
def test_an_option_of_another_model_type_is_refused_before_anything_is_built(layout_det_dir, tmp_path, monkeypatch,
                                                                              use_hpip):
    """topk belongs to classifiers: asking a detector for it is a clear HpiError before any engine is built."""
    from hpi.backends.base import Backend
    from hpi.cache import EngineCache

    def no_build(*args, **kwargs):
        raise AssertionError("an engine was built for a call create_model refuses")

    monkeypatch.setattr(Backend, "engine", no_build)
    with pytest.raises(InvalidConfigError, match=r"PicoDet_layout_1x_cdla is a detection model.*\['topk'\]"):
        hpi.create_model("PicoDet_layout_1x_cdla", layout_det_dir, device="cpu", use_hpip=use_hpip,
                         cache_dir=tmp_path, topk=3)
    assert EngineCache(tmp_path).entries() == []


def test_a_model_type_refusing_a_task_names_an_api_that_works(layout_det_dir, engine_cache):
    """The message of a model type asked to run another task names hpi.create_model, and that call works."""
    from hpi.models.classification import Predictor
    from hpi.source import ModelSource

    source = ModelSource.from_path(layout_det_dir, model_name="PicoDet_layout_1x_cdla")
    with pytest.raises(InvalidConfigError, match="load it with hpi.create_model"):
        Predictor.check_source(source)
    with hpi.create_model("PicoDet_layout_1x_cdla", layout_det_dir, device="cpu", cache_dir=engine_cache) as det:
        assert det.model_name == "PicoDet_layout_1x_cdla"


def test_a_model_rejected_after_loading_has_its_engine_closed(toy_dir, tmp_path, monkeypatch):
    from hpi.backends.base import Engine
    from hpi.models import classification

    closed = []
    real_close = Engine.close
    monkeypatch.setattr(Engine, "close", lambda self: closed.append(self) or real_close(self))

    def refuse(self, *args, **kwargs):
        raise InvalidConfigError("refused after loading")

    monkeypatch.setattr(classification.Predictor, "__init__", refuse)
    with pytest.raises(InvalidConfigError, match="refused after loading"):
        hpi.create_model("ToyNet", toy_dir, device="cpu", cache_dir=tmp_path)
    assert len(closed) == 1
