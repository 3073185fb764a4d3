"""The request and response bodies of PaddleX's serving protocol, as pydantic models.

Every response is a JSON object with ``logId`` (a UUID per request), ``errorCode`` and ``errorMsg``. Success is HTTP
200 with ``errorCode`` 0, ``errorMsg`` "Success" and a ``result``; a failure carries its HTTP status as
``errorCode`` and the reason in ``errorMsg``, and has no ``result``.

Image fields hold an http(s) URL the server may fetch, or the Base64-encoded bytes of an image file. The ``image``
of a result is the visualisation, a Base64 JPEG.

Endpoints (paths as PaddleX serves them):

* ``POST /image-classification``: :class:`ClassifyRequest` -> :class:`ClassifyResult`
* ``POST /shitu-index-build``: :class:`BuildIndexRequest` -> :class:`BuildIndexResult`
* ``POST /shitu-index-add``: :class:`AddImagesToIndexRequest` -> :class:`AddImagesToIndexResult`
* ``POST /shitu-index-remove``: :class:`RemoveImagesFromIndexRequest` -> :class:`RemoveImagesFromIndexResult`
* ``POST /shitu-infer``: :class:`ShiTuInferRequest` -> :class:`ShiTuInferResult`
* ``GET /health``: :class:`HealthResult` (hpi's addition: which backend each model runs on)
* ``GET /metrics``: Prometheus text (hpi's addition; see :mod:`hpi.serving.observability`)
"""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

ResultT = TypeVar("ResultT")

CLASSIFY_ENDPOINT = "/image-classification"
BUILD_INDEX_ENDPOINT = "/shitu-index-build"
ADD_IMAGES_TO_INDEX_ENDPOINT = "/shitu-index-add"
REMOVE_IMAGES_FROM_INDEX_ENDPOINT = "/shitu-index-remove"
SHITU_INFER_ENDPOINT = "/shitu-infer"
HEALTH_ENDPOINT = "/health"
METRICS_ENDPOINT = "/metrics"
INDEX_CHANGING_ENDPOINTS = (BUILD_INDEX_ENDPOINT, ADD_IMAGES_TO_INDEX_ENDPOINT, REMOVE_IMAGES_FROM_INDEX_ENDPOINT)

ImageField = Annotated[
    str,
    Field(description="An http(s) URL of an image file the server may fetch, or the file's bytes, Base64-encoded."),
]
BoundingBox = Annotated[
    list[float], Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in pixels of the input image")
]


class _Body(BaseModel):
    # Unknown fields are ignored, as PaddleX does (clients of newer protocol versions send more).
    model_config = ConfigDict(extra="ignore")


class ErrorResponse(_Body):
    """Any failed request."""

    logId: str = Field(description="UUID of the request")
    errorCode: int = Field(description="the HTTP status of the response")
    errorMsg: str = Field(description="what went wrong")


class ResultResponse(_Body, Generic[ResultT]):
    """Any successful request."""

    logId: str = Field(description="UUID of the request")
    errorCode: int = Field(0, description="always 0")
    errorMsg: str = Field("Success", description='always "Success"')
    result: ResultT


# --------------------------------------------------------------------------------------------------- classification


VisualizeField = Annotated[
    bool | None,
    Field(description="return result.image (the visualisation); null: the server's setting (on unless started with "
                      "--no-visualize). false saves the server the drawing and JPEG encoding"),
]


class ClassifyRequest(_Body):
    image: ImageField
    topk: int | None = Field(None, ge=1, description="classes to return; default: the pipeline's configuration")
    visualize: VisualizeField = None


class Category(_Body):
    id: int = Field(description="class id")
    name: str = Field(description="class name")
    score: float = Field(description="class score")


class ClassifyResult(_Body):
    categories: list[Category]
    image: str | None = Field(description="the classification drawn on the input, JPEG, Base64-encoded; null when "
                                          "not asked for")


# --------------------------------------------------------------------------------------------------- PP-ShiTuV2


class ImageLabelPair(_Body):
    image: ImageField
    label: str = Field(min_length=1, description="the label of the object in the image")


class BuildIndexRequest(_Body):
    imageLabelPairs: list[ImageLabelPair] = Field(min_length=1, description="gallery images and their labels")


class BuildIndexResult(_Body):
    indexKey: str = Field(description="names the new index in the other operations")
    idMap: dict[int, str] = Field(description="vector id -> label, for every item in the index")


class AddImagesToIndexRequest(_Body):
    imageLabelPairs: list[ImageLabelPair] = Field(min_length=1)
    indexKey: str | None = Field(None, description="from buildIndex; default: the server's --index")


class AddImagesToIndexResult(_Body):
    idMap: dict[int, str] = Field(description="vector id -> label, for every item in the index")


class RemoveImagesFromIndexRequest(_Body):
    ids: list[int] = Field(min_length=1, description="vector ids to remove")
    indexKey: str | None = Field(None, description="from buildIndex; default: the server's --index")


class RemoveImagesFromIndexResult(_Body):
    idMap: dict[int, str] = Field(description="vector id -> label, for every item left in the index")


class ShiTuInferRequest(_Body):
    image: ImageField
    indexKey: str | None = Field(None, description="from buildIndex; default: the server's --index")
    visualize: VisualizeField = None


class RecResult(_Body):
    label: str
    score: float


class DetectedObject(_Body):
    bbox: BoundingBox
    recResults: list[RecResult] = Field(description="best labels first")
    score: float = Field(description="detection score")


class ShiTuInferResult(_Body):
    detectedObjects: list[DetectedObject]
    image: str | None = Field(description="the recognition drawn on the input, JPEG, Base64-encoded; null when not "
                                          "asked for")


# --------------------------------------------------------------------------------------------------- health


class ModelStatus(_Body):
    role: str = Field(description="what the model does in the pipeline, e.g. 'classification', 'detection'")
    name: str = Field(description="PaddleX model name")
    backend: str = Field(description="the inference backend it runs on: paddle, onnxruntime, openvino, tensorrt")
    device: str
    precision: str | None = None
    mode: str | None = Field(None, description="how the backend was chosen (normal or high-performance mode)")
    weights: str | None = Field(None, description="'seeded' for zoo builds whose scores mean nothing")


class HealthResult(_Body):
    status: str = Field(description='"ok" while every model worker is running')
    pipeline: str
    models: list[ModelStatus] | None = Field(None, description="null to a caller without a key when keys are set")
    batching: dict[str, dict[str, float | int]] | None = Field(
        None, description="per-model batcher counters; null to a caller without a key when keys are set")
