"""Detection models: PaddleDetection-format detectors (PicoDet and the like) on any backend.

:class:`Detector` runs a detector through the shared predict loop; what the export's ``inference.yml`` means, how an
image is prepared and how each output layout becomes boxes is in :mod:`hpi.models.detector_ops`.

Results are PaddleX's: ``{input_path, page_index, boxes: [{cls_id, label, score, coordinate}]}`` with
``coordinate`` = [xmin, ymin, xmax, ymax] in original-image pixels, clipped to the image, best score first.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from hpi.backends.base import Engine
from hpi.backends.choice import BackendChoice
from hpi.errors import InvalidConfigError, ModelSourceError
from hpi.inputs import InputItem
from hpi.models.base import ItemFailure, LoadedModel, Payload, finish_result, predict_loop
from hpi.models.detector_ops import (
    IM_SHAPE_INPUT,
    IMAGE_INPUT,
    SCALE_FACTOR_INPUT,
    DetectionSpec,
    detect_rows,
    is_number,
    prepare_image,
)
from hpi.results import DetResult
from hpi.source import ModelSource

# ---------------------------------------------------------------------------------------------------------------
# boxes


class DetBox(NamedTuple):
    """One detected object in original-image pixels."""

    cls_id: int
    label: str
    score: float
    coordinate: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax

    def to_dict(self) -> dict[str, Any]:
        return {"cls_id": self.cls_id, "label": self.label, "score": self.score,
                "coordinate": [round(c, 4) for c in self.coordinate]}


# ---------------------------------------------------------------------------------------------------------------
# the model


class Detector(LoadedModel):
    """A loaded detector. Use :func:`hpi.create_model` to make one.

    Example:
        >>> det = hpi.create_model("PicoDet_layout_1x", "path/to/model_dir", device="cpu")
        >>> for res in det.predict("page.png"):
        ...     res.print()
    """

    tasks = ("detection",)
    options = ()

    def __init__(self, source: ModelSource, engine: Engine, choice: BackendChoice) -> None:
        super().__init__(source, engine, choice)
        self.spec = DetectionSpec.from_source(source)
        if IMAGE_INPUT not in engine.input_names:
            raise ModelSourceError(
                f"{source.model_file}: the detector has inputs {engine.input_names}; expected one named {IMAGE_INPUT!r}"
            )
        unknown = sorted(set(engine.input_names) - {IMAGE_INPUT, SCALE_FACTOR_INPUT, IM_SHAPE_INPUT})
        if unknown:
            raise ModelSourceError(
                f"{source.model_file}: unsupported detector input(s) {unknown}; "
                f"known: {IMAGE_INPUT}, {SCALE_FACTOR_INPUT}, {IM_SHAPE_INPUT}"
            )

    @classmethod
    def check_source(cls, source: ModelSource) -> None:
        """A detector's ``inference.yml`` is parsed in full before anything is built."""
        super().check_source(source)
        DetectionSpec.from_source(source)

    def detect(self, images: Sequence[np.ndarray], threshold: float | None = None) -> list[list[DetBox]]:
        """Boxes per RGB uint8 HWC image, in original-image pixels, scoring above ``threshold``.

        Args:
            images: decoded RGB images.
            threshold: minimum score; default: the model's ``draw_threshold``.
        """
        thr = self.spec.draw_threshold if threshold is None else _check_threshold(threshold)
        rows = detect_rows(self.spec, self.engine, [prepare_image(self.spec, rgb) for rgb in images])
        return [self._to_boxes(det, rgb.shape[:2], thr) for det, rgb in zip(rows, images)]

    def _to_boxes(self, rows: np.ndarray, hw: tuple[int, int], threshold: float) -> list[DetBox]:
        height, width = hw
        boxes = []
        # Best score first: backends return NMS rows in different orders (OpenVINO's NMS is not ORT's).
        for cls_id, score, x1, y1, x2, y2 in rows[np.argsort(-rows[:, 1], kind="stable")].tolist():
            if cls_id < 0 or score <= threshold:
                continue
            x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
            y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
            boxes.append(DetBox(int(cls_id), self.spec.label(int(cls_id)), float(score), (x1, y1, x2, y2)))
        return boxes

    def predict(self, input: Any, batch_size: int = 1, threshold: float | None = None  # noqa: A002
                ) -> Iterator[DetResult]:
        """Yield one :class:`~hpi.results.DetResult` per input image, in order.

        Args:
            input: what :meth:`hpi.models.classification.Predictor.predict` accepts (arrays are BGR, as in PaddleX).
            batch_size: images per engine call (detectors whose graph takes one image run them one by one).
            threshold: minimum box score; default: the model's ``draw_threshold``.

        Raises:
            PredictionError: after all good items were yielded, if any item could not be read or processed.
        """
        yield from predict_loop(input, batch_size, functools.partial(self._predict_batch, threshold=threshold))

    __call__ = predict

    def _predict_batch(self, loaded: list[tuple[InputItem, Payload]], failures: list[ItemFailure], *,
                       threshold: float | None) -> Iterator[DetResult]:
        for (item, rgb), boxes in zip(loaded, self.detect([rgb for _, rgb in loaded], threshold)):
            result = DetResult({"input_path": item.input_path, "page_index": None,
                                "boxes": [b.to_dict() for b in boxes]})
            yield finish_result(result, item, rgb, seeded=self.seeded)


def _check_threshold(value: Any) -> float:
    if not is_number(value) or not 0 <= value <= 1:
        raise InvalidConfigError(f"threshold must be a number in [0, 1], got {value!r}")
    return float(value)

