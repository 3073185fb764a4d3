"""PP-ShiTuV2's endpoints: build, add to and remove from indexes, and recognise objects against one.

* ``/shitu-index-build``: the gallery images are embedded whole (as PaddleX's ``build_index`` does) on the model
  thread, a new index is built (``HNSW32``, ``IP``, PaddleX's defaults), saved, and its ``indexKey`` returned.
* ``/shitu-index-add`` and ``/shitu-index-remove``: change an index and save it before answering (see
  :mod:`hpi.serving.indexes` for the locking); the embedding happens before the index is locked.
* ``/shitu-infer``: queued to the dynamic batcher; one batch may mix indexes, and the pipeline runs once per index.

A request's images are all read and checked (size, pixels, format) before any is decoded, and decoded and embedded
``max_batch`` at a time, so a request costs at most ``max_batch`` decoded images of memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from fastapi import FastAPI, Request

from hpi.errors import HpiError, HpiInternalError, InvalidConfigError, PredictionError
from hpi.retrieval import FeatureIndex, UnknownIdError
from hpi.serving.batching import AUTO_BATCH, DynamicBatcher, worker_for
from hpi.serving.common import (
    ServeSettings,
    Service,
    encode_jpeg_base64,
    json_response,
    log_id_of,
    model_status,
    ok_body,
    ok_response,
)
from hpi.serving.indexes import IndexStore
from hpi.serving.limits import (
    PayloadTooLargeError,
    RequestRejectedError,
    check_pixels,
    decode_image_bytes,
    decoded_bytes,
    read_image_field,
)
from hpi.serving.protocol import (
    ADD_IMAGES_TO_INDEX_ENDPOINT,
    BUILD_INDEX_ENDPOINT,
    REMOVE_IMAGES_FROM_INDEX_ENDPOINT,
    SHITU_INFER_ENDPOINT,
    AddImagesToIndexRequest,
    AddImagesToIndexResult,
    BuildIndexRequest,
    BuildIndexResult,
    ErrorResponse,
    ImageLabelPair,
    ModelStatus,
    RemoveImagesFromIndexRequest,
    RemoveImagesFromIndexResult,
    ResultResponse,
    ShiTuInferRequest,
    ShiTuInferResult,
)

INDEX_TYPE = "HNSW32"  # PaddleX's build_index defaults
METRIC_TYPE = "IP"
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 403, 404, 413, 422, 500, 503, 504)}


@dataclass(frozen=True)
class ShiTuItem:
    """One recognition request: its image (BGR uint8 HWC) and the index to search."""

    image: np.ndarray
    index: FeatureIndex


class ShiTuService(Service):
    """Serves a PP-ShiTuV2 pipeline (:class:`hpi.pipelines.shitu.ShiTuPipeline` or anything with its
    ``predict(images, index=, batch_size=)`` and ``embed_images(rgb_images)``)."""

    pipeline_name = "PP-ShiTuV2"

    def __init__(self, pipeline: Any, settings: ServeSettings) -> None:
        if settings.batching.max_batch == AUTO_BATCH:
            raise InvalidConfigError("max_batch 'auto' measures image classification only; give PP-ShiTuV2 a number")
        super().__init__(settings)
        for method in ("predict", "embed_images"):
            if not callable(getattr(pipeline, method, None)):
                raise InvalidConfigError(f"cannot serve {type(pipeline).__name__} as PP-ShiTuV2: no {method}()")
        self.pipeline = pipeline
        default_path = settings.default_index or getattr(getattr(pipeline, "config", None), "index", None)
        default = getattr(pipeline, "index", None)
        if settings.default_index:
            default = FeatureIndex.load(settings.default_index)
        self.store = IndexStore(settings.resolved_index_dir(), default=default, default_path=default_path,
                                quotas=settings.quotas)
        # One thread owns both models: a request runs detection then recognition, and so does an index build.
        self.batcher: DynamicBatcher[ShiTuItem, Any] = DynamicBatcher(
            self._run_batch, worker_for(pipeline, "PP-ShiTuV2"), settings.batching, name="PP-ShiTuV2"
        )
        self.batchers = [self.batcher]

    def models(self) -> list[ModelStatus]:
        out = []
        for role, attr in (("detection", "detector"), ("recognition", "recognizer")):
            predictor = getattr(self.pipeline, attr, None)
            if predictor is not None:
                out.append(model_status(role, predictor))
        return out

    # ----------------------------------------------------------------------------------------------- model thread

    def _run_batch(self, items: list[ShiTuItem]) -> list[Any]:
        out: list[Any] = [None] * len(items)
        groups: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(id(item.index), []).append(i)
        for positions in groups.values():
            index = items[positions[0]].index
            failed: set[int] = set()
            results: list[Any] = []
            try:
                for res in self.pipeline.predict([items[i].image for i in positions], index=index,
                                                 batch_size=len(positions)):
                    results.append(res)
            except PredictionError as exc:
                for failure in exc.failures:
                    out[positions[failure.index]] = failure.error
                    failed.add(failure.index)
            except HpiError as exc:  # e.g. an index whose dimension is not the model's: this group fails
                for i in positions:
                    out[i] = exc
                continue
            ok = [p for k, p in enumerate(positions) if k not in failed]
            if len(ok) != len(results):
                raise HpiInternalError(f"predict returned {len(results)} results for {len(ok)} images")
            for i, res in zip(ok, results):
                out[i] = res
        return out

    def _embed(self, images: list[np.ndarray]) -> np.ndarray:
        return np.asarray(self.pipeline.embed_images(images), dtype=np.float32)

    # ----------------------------------------------------------------------------------------------- helpers

    async def _gallery_features(self, pairs: list[ImageLabelPair]) -> tuple[np.ndarray, list[str]]:
        """Features of the pairs' images (all checked first, then decoded and embedded ``max_batch`` at a time)."""
        limit = self.limits.max_images_per_request
        if len(pairs) > limit:
            raise PayloadTooLargeError(f"imageLabelPairs: {len(pairs)} pairs, more than the limit of {limit} per "
                                       "request; send them in several /shitu-index-add requests")
        names = [f"imageLabelPairs[{i}].image" for i in range(len(pairs))]
        blobs = await asyncio.gather(*(read_image_field(p.image, self.limits, self.fetcher, name)
                                       for p, name in zip(pairs, names)))
        for blob, name in zip(blobs, names):
            check_pixels(blob, self.limits, name)
        step = self.settings.batching.max_batch
        rows = []
        for start in range(0, len(blobs), step):
            chunk = list(zip(blobs[start:start + step], names[start:start + step]))
            rgbs = await asyncio.gather(*(self.in_cpu_pool(self._decode_rgb, blob, name) for blob, name in chunk))
            rows.append(await self.batcher.worker.call(self._embed, list(rgbs)))
        return np.concatenate(rows), [p.label for p in pairs]

    def _decode_rgb(self, blob: bytes, name: str) -> np.ndarray:
        return cv2.cvtColor(decode_image_bytes(blob, self.limits, name), cv2.COLOR_BGR2RGB)

    def _render(self, res: Any, visualize: bool) -> dict[str, Any]:
        objects = [
            {
                "bbox": [float(c) for c in box["coordinate"]],
                "recResults": [{"label": str(label), "score": float(score)}
                               for label, score in zip(box["labels"], box["rec_scores"])],
                "score": float(box["det_score"]),
            }
            for box in res["boxes"]
        ]
        image = encode_jpeg_base64(res.img["res"], self.settings.jpeg_quality) if visualize else None
        return {"detectedObjects": objects, "image": image}

    # ----------------------------------------------------------------------------------------------- endpoints

    async def build_index(self, body: BuildIndexRequest, request: Request) -> Any:
        await self.in_cpu_pool(self.store.check_new_index, len(body.imageLabelPairs))  # before any embedding
        features, labels = await self._gallery_features(body.imageLabelPairs)

        def build() -> tuple[str, dict[int, str]]:
            index = FeatureIndex(features, labels, index_type=INDEX_TYPE, metric_type=METRIC_TYPE)
            return self.store.create(index), index.id_map

        key, id_map = await self.in_cpu_pool(build)
        return ok_response(request, {"indexKey": key, "idMap": id_map})

    async def add_to_index(self, body: AddImagesToIndexRequest, request: Request) -> Any:
        # an unknown key, or an index the images would take over its quota, fails before any embedding
        await self.in_cpu_pool(self.store.check_growth, body.indexKey, len(body.imageLabelPairs))
        features, labels = await self._gallery_features(body.imageLabelPairs)
        id_map = await self.in_cpu_pool(self.store.append, body.indexKey, features, labels)
        return ok_response(request, {"idMap": id_map})

    async def remove_from_index(self, body: RemoveImagesFromIndexRequest, request: Request) -> Any:
        limit = self.limits.max_ids_per_request
        if len(body.ids) > limit:
            raise PayloadTooLargeError(f"ids: {len(body.ids)} ids, more than the limit of {limit} per request")
        try:
            id_map = await self.in_cpu_pool(self.store.remove, body.indexKey, body.ids)
        except UnknownIdError as exc:
            shown = ", ".join(str(i) for i in exc.ids[:20]) + (", ..." if len(exc.ids) > 20 else "")
            raise RequestRejectedError(f"ids not in the index: {shown}; nothing was removed") from exc
        return ok_response(request, {"idMap": id_map})

    async def infer(self, body: ShiTuInferRequest, request: Request) -> Any:
        index = await self.in_cpu_pool(self.store.get, body.indexKey)
        data = await self.read_image(body.image, "image")
        log_id, visualize = log_id_of(request), self.visualize(body.visualize)
        async with self.decode_budget.hold(decoded_bytes(data)):
            image = await self.in_cpu_pool(decode_image_bytes, data, self.limits, "image")
            res = await self.submit(self.batcher, ShiTuItem(image, index))
            return json_response(await self.in_cpu_pool(lambda: ok_body(log_id, self._render(res, visualize))))

    def register_routes(self, app: FastAPI) -> None:
        routes = (
            (BUILD_INDEX_ENDPOINT, self.build_index, BuildIndexResult, "buildIndex", "Build a feature index"),
            (ADD_IMAGES_TO_INDEX_ENDPOINT, self.add_to_index, AddImagesToIndexResult, "addImagesToIndex",
             "Add images to an index"),
            (REMOVE_IMAGES_FROM_INDEX_ENDPOINT, self.remove_from_index, RemoveImagesFromIndexResult,
             "removeImagesFromIndex", "Remove images from an index"),
            (SHITU_INFER_ENDPOINT, self.infer, ShiTuInferResult, "infer", "Recognise the objects in an image"),
        )
        for path, endpoint, result, operation, summary in routes:
            app.add_api_route(path, endpoint, methods=["POST"], response_model=ResultResponse[result],
                              responses=_ERRORS, summary=summary, operation_id=operation)
