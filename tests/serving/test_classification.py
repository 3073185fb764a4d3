"""hpi/serving/classification.py: the image-classification endpoint's request -> result mapping, driven through
its public surface (:class:`ClassificationService` and its ``classify`` coroutine, ``with_measured_max_batch``,
``draw_labels_jpeg``) on an event loop in the test, without an HTTP server: categories as the model ranks them,
``topk``, a request's own error inside a shared batch, and the visualisation."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

import cv2
import numpy as np
import pytest
from starlette.requests import Request

from hpi.api import create_model
from hpi.errors import HpiError, InferenceError, InvalidConfigError, InvalidInputError, PredictionError
from hpi.models.base import ItemFailure
from hpi.serving.batching import AUTO_BATCH, AUTO_BATCH_SIZES, BatchingConfig
from hpi.serving.classification import ClassificationService, draw_labels_jpeg, with_measured_max_batch
from hpi.serving.common import ServeSettings
from hpi.serving.limits import RequestRejectedError
from hpi.serving.protocol import ClassifyRequest
from tests.serving.conftest import b64, encoded, jpeg_bytes, png_declaring


@pytest.fixture(scope="module")
def model(toy_dir, engine_cache):
    """The toy classifier (10 classes, inference.yml topk 5), this module's own."""
    with create_model("ToyNet", toy_dir, device="cpu", cache_dir=engine_cache) as m:
        yield m


class Recording:
    """A runner that is the model, and notes each ``predict`` call (images, batch size, topk)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.calls: list[tuple[int, int, int | None]] = []

    def predict(self, images, batch_size, topk):
        self.calls.append((len(images), batch_size, topk))
        return self.predictor.predict(images, batch_size=batch_size, topk=topk)


def _settings(max_batch: int | str = 8, window_ms: float = 0.0, **kwargs: Any) -> ServeSettings:
    return ServeSettings(batching=BatchingConfig(max_batch=max_batch, window_ms=window_ms), **kwargs)


def _request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/image-classification", "headers": []})


def _serve(service: ClassificationService, body: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``body`` on an event loop with the service started, and stop the service after it."""

    async def main() -> Any:
        await service.start()
        try:
            return await body()
        finally:
            await service.stop()

    return asyncio.run(main())


async def _classify(service: ClassificationService, data: bytes, **fields: Any) -> dict[str, Any]:
    response = await service.classify(ClassifyRequest(image=b64(data), **fields), _request())
    assert response.status_code == 200 and response.media_type == "application/json"
    return json.loads(response.body)


def _expected(model, data: bytes, topk: int) -> list[dict[str, Any]]:
    (res,) = model.predict([data], topk=topk)
    return [{"id": i, "name": n, "score": pytest.approx(s, abs=1e-6)}
            for i, n, s in zip(res["class_ids"], res["label_names"], res["scores"])]


def test_a_request_gets_the_models_categories_in_the_protocols_body(model):
    service = ClassificationService(model, _settings())
    body = _serve(service, lambda: _classify(service, jpeg_bytes("chelsea"), visualize=False))
    assert body["errorCode"] == 0 and body["errorMsg"] == "Success" and len(body["logId"]) == 36
    assert body["result"]["image"] is None  # not asked for
    assert body["result"]["categories"] == _expected(model, jpeg_bytes("chelsea"), 5)  # inference.yml's topk: 5
    assert all(type(c["id"]) is int and type(c["score"]) is float for c in body["result"]["categories"])


def test_topk_of_a_request_and_of_the_model(model, toy_dir, engine_cache):
    service = ClassificationService(model, _settings())
    body = _serve(service, lambda: _classify(service, jpeg_bytes("coffee"), topk=2, visualize=False))
    assert body["result"]["categories"] == _expected(model, jpeg_bytes("coffee"), 2)
    with create_model("ToyNet", toy_dir, device="cpu", cache_dir=engine_cache, topk=3) as three:
        service = ClassificationService(three, _settings())
        body = _serve(service, lambda: _classify(service, jpeg_bytes("coffee"), visualize=False))
    assert len(body["result"]["categories"]) == 3  # the model's own default when a request gives none


def test_requests_share_a_batch_and_each_gets_its_own_topk(model):
    runner = Recording(model)
    service = ClassificationService(runner, _settings(max_batch=3, window_ms=1000))  # full batch: no waiting
    images = [jpeg_bytes("chelsea"), jpeg_bytes("rocket"), jpeg_bytes("astronaut")]

    async def three() -> list[dict[str, Any]]:
        return await asyncio.gather(*(_classify(service, data, topk=k, visualize=False)
                                      for data, k in zip(images, (1, 4, 2))))

    bodies = _serve(service, three)
    assert runner.calls == [(3, 3, 4)]  # one engine call, at the largest topk asked for
    for body, data, k in zip(bodies, images, (1, 4, 2)):
        assert body["result"]["categories"] == _expected(model, data, k)
    assert len({b["logId"] for b in bodies}) == 3


def test_an_image_that_does_not_decode_fails_its_own_request_only(model):
    service = ClassificationService(model, _settings(max_batch=2, window_ms=1000))
    broken = png_declaring(100, 100)  # a valid header, too little pixel data

    async def both() -> list[Any]:
        return await asyncio.gather(_classify(service, jpeg_bytes("chelsea"), visualize=False),
                                    _classify(service, broken, visualize=False), return_exceptions=True)

    good, bad = _serve(service, both)
    assert good["result"]["categories"] == _expected(model, jpeg_bytes("chelsea"), 5)
    assert isinstance(bad, RequestRejectedError)
    # The serving decoder's message about the request's own field, not the batch position ("input[1] (bytes)").
    assert str(bad).startswith("image: not a readable image (its header says 100 x 100, but it cannot be decoded")
    assert service.batcher.stats()["batches"] == 1


class RefusesPng(Recording):
    """The model, refusing PNG images after decoding them (as a model refuses an image it cannot preprocess)."""

    def predict(self, images, batch_size, topk):
        self.calls.append((len(images), batch_size, topk))
        keep = [i for i, data in enumerate(images) if not data.startswith(b"\x89PNG")]
        results = list(self.predictor.predict([images[i] for i in keep], batch_size=batch_size, topk=topk))
        yield from results
        failures = [ItemFailure(i, None, InvalidInputError(f"input[{i}] (bytes): PNG is not allowed here"))
                    for i in range(len(images)) if i not in keep]
        if failures:
            raise PredictionError(failures)


def test_another_per_item_error_is_named_image_and_keeps_its_type(model):
    service = ClassificationService(RefusesPng(model), _settings(max_batch=2, window_ms=1000))
    png = encoded(cv2.imdecode(np.frombuffer(jpeg_bytes("rocket"), np.uint8), cv2.IMREAD_COLOR))

    async def both() -> list[Any]:
        return await asyncio.gather(_classify(service, png, visualize=False),
                                    _classify(service, jpeg_bytes("coffee"), visualize=False),
                                    return_exceptions=True)

    bad, good = _serve(service, both)
    assert type(bad) is InvalidInputError and str(bad) == "image: PNG is not allowed here"
    assert isinstance(bad.__cause__, InvalidInputError)  # the model's own error behind it
    assert good["result"]["categories"] == _expected(model, jpeg_bytes("coffee"), 5)


class FailsWholeBatch(Recording):
    def predict(self, images, batch_size, topk):
        raise InferenceError("the engine failed")


def test_a_batch_wide_failure_reaches_every_request_of_the_batch(model):
    service = ClassificationService(FailsWholeBatch(model), _settings(max_batch=2, window_ms=1000))

    async def both() -> list[Any]:
        return await asyncio.gather(*(_classify(service, jpeg_bytes(n)) for n in ("chelsea", "coffee")),
                                    return_exceptions=True)

    errors = _serve(service, both)
    assert [type(e) for e in errors] == [InferenceError, InferenceError]


class ShortOfResults(Recording):
    def predict(self, images, batch_size, topk):
        yield from list(self.predictor.predict(images, batch_size=batch_size, topk=topk))[:-1]


def test_a_runner_that_drops_a_result_silently_is_a_bug_not_a_wrong_answer(model):
    service = ClassificationService(ShortOfResults(model), _settings(max_batch=2, window_ms=1000))

    async def both() -> list[Any]:
        return await asyncio.gather(*(_classify(service, jpeg_bytes(n)) for n in ("chelsea", "coffee")),
                                    return_exceptions=True)

    errors = _serve(service, both)
    assert all("predict returned 1 results for 2 images" in str(e) for e in errors)
    assert not any(isinstance(e, HpiError) for e in errors)  # HpiInternalError: not a user's error


def _decoded(text: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(base64.b64decode(text), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_the_visualisation_is_the_request_image_with_its_labels(model):
    service = ClassificationService(model, _settings())
    data = jpeg_bytes("astronaut")
    body = _serve(service, lambda: _classify(service, data, topk=2, visualize=True))
    drawn = _decoded(body["result"]["image"]).astype(int)
    original = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).astype(int)
    assert drawn.shape == original.shape
    h, w = original.shape[:2]
    assert np.abs(drawn[: h // 8, : w // 3] - original[: h // 8, : w // 3]).mean() > 20  # labels, top left
    assert np.abs(drawn[h // 2:, w // 2:] - original[h // 2:, w // 2:]).mean() < 5  # elsewhere: the photo (JPEG)


def test_the_server_setting_decides_when_a_request_does_not(model):
    service = ClassificationService(model, _settings(visualize=False))
    body = _serve(service, lambda: _classify(service, jpeg_bytes("chelsea")))
    assert body["result"]["image"] is None
    service = ClassificationService(model, _settings(visualize=False))
    body = _serve(service, lambda: _classify(service, jpeg_bytes("chelsea"), visualize=True))
    assert body["result"]["image"] is not None


class ChineseLabels(Recording):
    """The model with non-ASCII label names (a model trained with a Chinese label list)."""

    def predict(self, images, batch_size, topk):
        for res in self.predictor.predict(images, batch_size=batch_size, topk=topk):
            res["label_names"] = [f"类别{i}" for i in res["class_ids"]]
            yield res


def test_non_ascii_labels_pass_through_and_are_still_drawn(model):
    service = ClassificationService(ChineseLabels(model), _settings())
    body = _serve(service, lambda: _classify(service, jpeg_bytes("coffee"), topk=2, visualize=True))
    names = [c["name"] for c in body["result"]["categories"]]
    assert names == [f"类别{c['id']}" for c in body["result"]["categories"]]
    original = cv2.imdecode(np.frombuffer(jpeg_bytes("coffee"), np.uint8), cv2.IMREAD_COLOR)
    assert _decoded(body["result"]["image"]).shape == original.shape


def test_a_runner_without_predict_is_refused():
    with pytest.raises(InvalidConfigError, match="cannot serve dict as image classification: no predict()"):
        ClassificationService({}, _settings())


def test_the_health_report_names_the_model(model):
    (status,) = ClassificationService(Recording(model), _settings()).models()
    assert (status.role, status.name, status.backend) == ("classification", "ToyNet", model.backend)
    assert status.mode == model.choice.mode


# ---------------------------------------------------------------------------------------------- max batch


def test_a_fixed_max_batch_is_kept_without_measuring(model):
    runner = Recording(model)
    settings = _settings(max_batch=4)
    assert with_measured_max_batch(runner, settings) is settings
    assert runner.calls == []


def test_auto_max_batch_is_measured_on_the_given_thread(model):
    runner, ran_on = Recording(model), []

    def run_on(fn):
        ran_on.append(fn)
        return fn()

    settings = _settings(max_batch=AUTO_BATCH, window_ms=3.0, visualize=False)
    measured = with_measured_max_batch(runner, settings, run_on)
    assert len(ran_on) == 1
    assert measured.batching.max_batch in AUTO_BATCH_SIZES
    assert measured.batching.window_ms == 3.0 and measured.visualize is False  # everything else kept
    assert measured == dataclasses.replace(settings, batching=dataclasses.replace(
        settings.batching, max_batch=measured.batching.max_batch))
    assert {n for n, _, _ in runner.calls} == set(AUTO_BATCH_SIZES)  # every size tried ...
    assert all(b == n and k == 1 for n, b, k in runner.calls)  # ... as one call of n images, top-1


# ------------------------------------------------------------------------------------------------ drawing


def test_draw_labels_jpeg_draws_in_place_top_left_and_leaves_the_rest():
    canvas = np.full((40, 200, 3), 128, np.uint8)
    untouched = canvas.copy()
    text = draw_labels_jpeg(canvas, [f"line {i}" for i in range(20)], 90)
    image = _decoded(text).astype(int)
    assert image.shape == (40, 200, 3)
    assert (canvas[2:12, 2:4] == 0).all() and (canvas[:2] == 128).all()  # drawn in place: a black box at (2, 2)
    assert np.abs(image[:, 150:] - untouched[:, 150:]).max() < 8  # right of the labels: unchanged
    yellow = (image[..., 2] > 180) & (image[..., 1] > 180) & (image[..., 0] < 100)  # BGR
    assert yellow[:, :100].any()


def test_draw_labels_jpeg_quality_changes_the_encoding():
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    low = draw_labels_jpeg(canvas.copy(), ["a 0.50"], 10)
    high = draw_labels_jpeg(canvas.copy(), ["a 0.50"], 95)
    assert len(base64.b64decode(low)) < len(base64.b64decode(high))
