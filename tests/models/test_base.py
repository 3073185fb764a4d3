"""hpi/models/base.py: the one predict loop (one bad item never loses the rest of its batch; the failures are
raised after every good result), batch-size checks, what every result carries, and the model-type check."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from hpi.api import create_model
from hpi.errors import InvalidConfigError, InvalidInputError, PredictionError
from hpi.inputs import InputItem
from hpi.models.base import ItemFailure, check_batch_size, fail, finish_result, predict_loop
from hpi.models.detection import Detector
from hpi.results import BaseResult, ClassificationResult
from hpi.source import ModelSource


def _bgr(value: int, h: int = 4, w: int = 5) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


class MeanStep:
    """A batch step that turns each read item into a result holding its mean pixel; records every batch it got.
    Items whose mean is ``refuse`` are recorded as failures, as a model's preprocessing does for an item it
    cannot process."""

    def __init__(self, refuse: float | None = None) -> None:
        self.batches: list[list[int]] = []
        self.refuse = refuse

    def __call__(self, loaded, failures):
        self.batches.append([item.index for item, _ in loaded])
        for item, payload in loaded:
            if isinstance(payload, bytes):
                yield BaseResult({"index": item.index, "bytes": len(payload)})
                continue
            mean = float(payload.mean())
            if mean == self.refuse:
                fail(failures, item, InvalidInputError(f"mean {mean} refused"))
                continue
            yield BaseResult({"index": item.index, "mean": mean})


def _run(iterator):
    """Every result the loop yields, and the error it ends with (None if it ends cleanly)."""
    results = []
    try:
        for res in iterator:
            results.append(res)
    except PredictionError as exc:
        return results, exc
    return results, None


def test_one_bad_item_does_not_lose_the_rest_of_its_batch(tmp_path: Path):
    good_file = tmp_path / "good.png"
    good_file.write_bytes(_png(_bgr(30)))
    inputs = [_bgr(10), b"not an image", str(good_file), np.zeros((3, 3), np.float32), _bgr(50)]
    step = MeanStep()
    results, error = _run(predict_loop(inputs, 3, step))
    assert [r["index"] for r in results] == [0, 2, 4]
    assert [r["mean"] for r in results] == [10.0, 30.0, 50.0]
    assert step.batches == [[0, 2], [4]]  # the unreadable items left their batch, the others stayed in it
    assert isinstance(error, PredictionError)
    assert [(f.index, f.input_path) for f in error.failures] == [(1, None), (3, None)]
    assert str(error).startswith("2 input(s) failed: input[1] (bytes)")
    assert "input[3] (array): expected a uint8 image array" in str(error)


def test_the_failures_are_raised_after_every_good_result_was_yielded():
    """The error comes only when the caller asks past the last good result: a consumer that stops early sees every
    result up to there and no error."""
    inputs = [b"bad", _bgr(1), _bgr(2), b"bad too", _bgr(3)]
    loop = predict_loop(inputs, 2, MeanStep())
    assert [next(loop)["index"] for _ in range(3)] == [1, 2, 4]
    with pytest.raises(PredictionError) as info:
        next(loop)
    assert [f.index for f in info.value.failures] == [0, 3]


def test_failures_the_step_records_are_reported_in_input_order_naming_each_item(tmp_path: Path):
    path = tmp_path / "refused.png"
    path.write_bytes(_png(_bgr(7)))
    inputs = [_bgr(7), b"garbage", _bgr(8), str(path)]
    results, error = _run(predict_loop(inputs, 4, MeanStep(refuse=7.0)))
    assert [r["index"] for r in results] == [2]
    assert [(f.index, f.input_path) for f in error.failures] == [(0, None), (1, None), (3, str(path))]
    assert all(isinstance(f, ItemFailure) for f in error.failures)
    messages = [str(f.error) for f in error.failures]
    assert messages[0] == "input[0] (array): mean 7.0 refused"
    assert messages[1].startswith("input[1] (bytes)")
    assert messages[2] == f"{path}: mean 7.0 refused"


def test_a_batch_with_no_readable_item_is_not_run():
    step = MeanStep()
    results, error = _run(predict_loop([b"x", b"y", _bgr(1)], 2, step))
    assert step.batches == [[2]] and [r["index"] for r in results] == [2]
    assert [f.index for f in error.failures] == [0, 1]


def test_a_clean_run_raises_nothing_and_batches_by_size():
    step = MeanStep()
    results, error = _run(predict_loop([_bgr(i) for i in range(5)], 2, step))
    assert error is None and len(results) == 5
    assert step.batches == [[0, 1], [2, 3], [4]]


def test_decode_false_hands_the_step_the_encoded_bytes(tmp_path: Path):
    data = _png(_bgr(9))
    path = tmp_path / "x.png"
    path.write_bytes(data)
    results, error = _run(predict_loop([data, str(path), _bgr(9)], 3, MeanStep(), decode=False))
    assert error is None
    assert [r.get("bytes") for r in results] == [len(data), len(data), None]
    assert results[2]["mean"] == 9.0  # arrays still arrive as RGB pixels


def test_structural_errors_raise_at_once_before_any_step(tmp_path: Path):
    step = MeanStep()
    loop = predict_loop([_bgr(1), str(tmp_path / "missing.jpg")], 1, step)
    with pytest.raises(InvalidInputError, match=r"missing\.jpg: no such file") as info:
        next(loop)
    assert not isinstance(info.value, PredictionError) and step.batches == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_check_batch_size_refuses_anything_but_a_positive_int(bad):
    with pytest.raises(InvalidConfigError, match=r"batch_size must be a positive integer, got " + repr(bad)):
        check_batch_size(bad)
    with pytest.raises(InvalidConfigError, match="batch_size must be a positive integer"):
        next(predict_loop([_bgr(1)], bad, MeanStep()))


@pytest.mark.parametrize("good", [1, 8, 1000])
def test_check_batch_size_returns_a_good_one(good):
    assert check_batch_size(good) == good


def test_finish_result_marks_seeded_weights_and_keeps_the_source_image():
    item = InputItem(4, None, _bgr(3))
    rgb = np.full((2, 2, 3), 5, np.uint8)
    res = finish_result(ClassificationResult({"class_ids": [1], "scores": [0.5]}), item, rgb, seeded=True)
    assert res["weights"] == "seeded" and res["_index"] == 4
    assert res.source_image() is rgb
    assert "_index" not in res.json["res"] and res.json["res"]["weights"] == "seeded"
    plain = finish_result(ClassificationResult({}), item, rgb, seeded=False)
    assert "weights" not in plain


def test_finish_result_of_encoded_bytes_decodes_only_when_asked():
    bgr = np.dstack([np.full((3, 4), v, np.uint8) for v in (10, 20, 30)])
    res = finish_result(BaseResult({}), InputItem(0, None, b""), _png(bgr), seeded=False)
    assert "_image" not in res
    np.testing.assert_array_equal(res.source_image(), bgr[:, :, ::-1])
    assert "_image" in res  # decoded once, kept


# -------------------------------------------------------------------------------------- on the toy model


@pytest.fixture(scope="module")
def toy(toy_dir, engine_cache):
    with create_model("ToyNet", toy_dir, device="cpu", cache_dir=engine_cache) as model:
        yield model


def test_a_model_keeps_the_good_items_of_a_batch_with_a_bad_one(toy, photos):
    cat, rocket = photos["chelsea"], photos["rocket"]
    alone = [r["class_ids"] for r in toy.predict([cat, rocket], batch_size=2)]
    results, error = _run(toy.predict([cat, b"\xff\xd8\xff truncated jpeg", rocket], batch_size=3))
    assert [r["_index"] for r in results] == [0, 2]
    assert [r["class_ids"] for r in results] == alone  # the same answers as without the bad item
    assert [f.index for f in error.failures] == [1]
    assert str(error.failures[0].error).startswith("input[1] (bytes)")


def test_a_model_type_refuses_a_source_of_another_task(toy_dir):
    with pytest.raises(InvalidConfigError, match=r"ToyNet is a classification model; Detector runs detection "
                                                 r"models; load it with hpi\.create_model"):
        Detector.check_source(ModelSource.from_path(toy_dir))


def test_a_loaded_model_describes_itself(toy):
    assert toy.model_name == "ToyNet" and toy.backend == toy.engine.name
    assert str(toy.device) == str(toy.engine.device)
    assert repr(toy).startswith("Predictor('ToyNet', ")
