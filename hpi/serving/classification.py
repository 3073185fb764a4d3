"""``POST /image-classification`` over an image classification pipeline or a classification predictor."""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from fastapi import FastAPI, Request

from hpi.calibration import BUILTIN_IMAGES
from hpi.errors import HpiError, HpiInternalError, InvalidConfigError, PredictionError
from hpi.inputs import InputItem
from hpi.serving.batching import AUTO_BATCH, DynamicBatcher, fastest_batch_size, worker_for
from hpi.serving.common import (
    ServeSettings,
    Service,
    encode_jpeg_base64,
    json_response,
    log_id_of,
    model_status,
    ok_body,
)
from hpi.serving.limits import decode_image_bytes, decoded_bytes
from hpi.serving.protocol import (
    CLASSIFY_ENDPOINT,
    ClassifyRequest,
    ClassifyResult,
    ErrorResponse,
    ModelStatus,
    ResultResponse,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifyItem:
    """One request's encoded image (its header already checked against the limits) and how many classes it wants.

    The bytes go to the model undecoded, as a file's bytes do offline: its preprocessing kernel decodes each batch
    on its own threads, straight into the model's input. Decoding them one by one on the engine thread left a core
    idle for that time on a 2-core machine (see benchmarks/results/load_test.md).
    """

    data: bytes
    topk: int


def draw_labels_jpeg(canvas: np.ndarray, lines: list[str], quality: int) -> str:
    """The classification visualisation (labels in yellow on black, top left, as ``ClassificationResult`` draws
    them) as Base64 JPEG, drawn with OpenCV: about a tenth of the cost of drawing with Pillow, which matters when
    every response carries one.

    Args:
        canvas: the input image, BGR uint8 HWC; drawn on in place.
        lines: ASCII text, one line per class.
        quality: JPEG quality.
    """
    height, width = canvas.shape[:2]
    scale = max(12, width // 30) / 24  # Hershey simplex at scale 1 is about 22 px tall; match Pillow's font size
    thickness = max(1, round(scale * 1.5))
    y = 2
    for line in lines:
        (w, h), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        cv2.rectangle(canvas, (2, y), (6 + w, y + h + base + 4), (0, 0, 0), -1)
        cv2.putText(canvas, line, (4, y + h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 255), thickness,
                    cv2.LINE_AA)
        y += h + base + 8
        if y >= height:
            break
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise HpiInternalError(f"OpenCV could not encode a {width} x {height} visualisation as JPEG")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _default_topk(runner: Any) -> int:
    """Classes per result when a request gives no ``topk``: the pipeline's, else the model's, else 5."""
    config_model = getattr(getattr(runner, "config", None), "model", None)
    predictor = getattr(runner, "predictor", runner)
    spec_topk = getattr(getattr(getattr(predictor, "source", None), "spec", None), "topk", None)
    for value in (getattr(config_model, "topk", None), getattr(predictor, "topk", None),
                  getattr(spec_topk, "topk", None)):
        if isinstance(value, int) and value > 0:
            return value
    return 5


def with_measured_max_batch(runner: Any, settings: ServeSettings,
                            run_on: Callable[[Callable[[], Any]], Any] | None = None) -> ServeSettings:
    """``settings`` with ``max_batch="auto"`` replaced by the batch size at which ``runner`` classifies the built-in
    photo fastest (:func:`~hpi.serving.batching.fastest_batch_size`, about 5 s for a small model); ``run_on`` runs
    the measurement on the thread that owns the engine. Other settings come back unchanged."""
    if settings.batching.max_batch != AUTO_BATCH:
        return settings
    data = (BUILTIN_IMAGES / "chelsea.jpg").read_bytes()

    def run_batch(n: int) -> None:
        for _ in runner.predict([data] * n, batch_size=n, topk=1):
            pass

    best, rates = (run_on or (lambda fn: fn()))(lambda: fastest_batch_size(run_batch))
    logger.info("max batch %d: the fastest of %s images per second by batch size", best,
                ", ".join(f"{n}: {rate:.1f}" for n, rate in rates.items()))
    return dataclasses.replace(settings, batching=dataclasses.replace(settings.batching, max_batch=best))


class ClassificationService(Service):
    """Classifies images for concurrent requests in shared, dynamically sized batches.

    Args:
        runner: an ``ImageClassificationPipeline`` or a classification ``Predictor``; anything with
            ``predict(images, batch_size=, topk=)`` that yields ``ClassificationResult``s in order and raises
            ``PredictionError`` for the items it could not process.
        settings: limits, batching and visualisation.
    """

    pipeline_name = "image_classification"

    def __init__(self, runner: Any, settings: ServeSettings) -> None:
        if not callable(getattr(runner, "predict", None)):
            raise InvalidConfigError(f"cannot serve {type(runner).__name__} as image classification: no predict()")
        self.runner = runner
        self.predictor = getattr(runner, "predictor", runner)
        self.default_topk = _default_topk(runner)
        name = str(getattr(self.predictor, "model_name", "classifier"))
        worker = worker_for(self.predictor, name)
        settings = with_measured_max_batch(runner, settings, worker.run)  # on the thread that will own the engine
        super().__init__(settings)
        self.batcher: DynamicBatcher[ClassifyItem, Any] = DynamicBatcher(
            self._run_batch, worker, settings.batching, name=name
        )
        self.batchers = [self.batcher]

    def models(self) -> list[ModelStatus]:
        return [model_status("classification", self.predictor)]

    def _run_batch(self, items: list[ClassifyItem]) -> list[Any]:
        """On the engine thread: one ``predict`` call on the batch's encoded images; each item gets its result or
        its own error (an image that does not decode fails its request only)."""
        out: list[Any] = [None] * len(items)
        results: list[Any] = []
        failed: set[int] = set()
        try:
            for res in self.runner.predict([item.data for item in items], batch_size=len(items),
                                           topk=max(item.topk for item in items)):
                results.append(res)
        except PredictionError as exc:
            for failure in exc.failures:
                out[failure.index] = self._item_error(items[failure.index].data, failure.index, failure.error)
                failed.add(failure.index)
        ok = [i for i in range(len(items)) if i not in failed]
        if len(ok) != len(results):
            raise HpiInternalError(f"predict returned {len(results)} results for {len(ok)} images")
        for i, res in zip(ok, results):
            out[i] = res
        return out

    def _item_error(self, data: bytes, index: int, exc: HpiError) -> HpiError:
        """The model's error about one request's image as the request's own: an image that does not decode gets
        the serving decoder's message (what its header says and why it failed), any other error is named
        ``image`` rather than by its place in the batch; the error's type (and so the HTTP status) stays."""
        try:
            decode_image_bytes(data, self.limits, "image")
        except HpiError as decode_error:
            return decode_error
        label, message = InputItem(index, None, data).label, str(exc)
        error = type(exc)("image" + message[len(label):] if message.startswith(label) else message)
        error.__cause__ = exc
        return error

    def _render(self, res: Any, topk: int, data: bytes, visualize: bool) -> dict[str, Any]:
        """The protocol's ``result`` for one classification; the visualisation is drawn on the request's image
        (``data``, decoded again here: only a response that carries the drawing pays for it)."""
        for key in ("class_ids", "scores", "label_names"):
            if key in res:
                res[key] = list(res[key])[:topk]
        ids, scores = res["class_ids"], res["scores"]
        names = [str(n) for n in (res.get("label_names") or [str(i) for i in ids])]
        categories = [{"id": int(i), "name": n, "score": float(s)} for i, n, s in zip(ids, names, scores)]
        image = None
        if visualize:
            lines = [f"{name.split(',')[0]} {score:.2f}" for name, score in zip(names, scores)]
            if all(line.isascii() for line in lines):
                canvas = decode_image_bytes(data, self.limits, "image")
                image = draw_labels_jpeg(canvas, lines, self.settings.jpeg_quality)
            else:  # OpenCV's fonts are ASCII only: the result's own (Pillow) drawing handles any script
                image = encode_jpeg_base64(res.img["res"], self.settings.jpeg_quality)
        return {"categories": categories, "image": image}

    async def classify(self, body: ClassifyRequest, request: Request) -> Any:
        data = await self.read_image(body.image, "image")
        topk = body.topk or self.default_topk
        log_id, visualize = log_id_of(request), self.visualize(body.visualize)
        async with self.decode_budget.hold(decoded_bytes(data)):  # decoded in the batch, drawn on below
            res = await self.submit(self.batcher, ClassifyItem(data, topk))
            if not visualize:  # a few categories: building them here costs less than a hand-off to the pool
                return json_response(ok_body(log_id, self._render(res, topk, data, visualize)))
            return json_response(await self.in_cpu_pool(
                lambda: ok_body(log_id, self._render(res, topk, data, visualize))))

    def register_routes(self, app: FastAPI) -> None:
        app.add_api_route(
            CLASSIFY_ENDPOINT,
            self.classify,
            methods=["POST"],
            response_model=ResultResponse[ClassifyResult],
            responses={code: {"model": ErrorResponse} for code in (400, 403, 413, 422, 500, 503, 504)},
            summary="Classify an image",
            operation_id="infer",
        )
