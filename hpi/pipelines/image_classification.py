"""The ``image_classification`` pipeline: one classifier, PaddleX's pipeline interface.

Results are the predictor's :class:`hpi.results.ClassificationResult` (``input_path, page_index, class_ids,
scores, label_names``), so ``hpi predict --pipeline image_classification`` prints what PaddleX prints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from hpi.device import parse_device
from hpi.errors import InvalidConfigError
from hpi.loading import load_model, locate_model
from hpi.models.classification import Predictor
from hpi.pipelines.config import ImageClassificationConfig
from hpi.results import BaseResult


class ImageClassificationPipeline:
    """A classifier behind PaddleX's pipeline interface. Make one with :func:`hpi.create_pipeline`."""

    def __init__(self, config: ImageClassificationConfig, predictor: Predictor) -> None:
        self.config = config
        self.predictor = predictor

    @classmethod
    def from_config(
        cls,
        config: ImageClassificationConfig,
        *,
        device: str | None = None,
        use_hpip: bool = False,
        hpi_config: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> ImageClassificationPipeline:
        """Load the configured classifier; ``device`` overrides the config's, ``use_hpip`` and ``hpi_config``
        apply unless the model block sets its own."""
        model = config.model
        predictor = load_model(
            Predictor,
            locate_model(model.model_name, model.model_dir, build=True),
            device=device or model.device or config.device,
            use_hpip=use_hpip if model.use_hpip is None else model.use_hpip,
            hpi_config=hpi_config if model.hpi_config is None else model.hpi_config,
            topk=model.topk,
            cache_dir=cache_dir,
        )
        return cls(config, predictor)

    @property
    def model_name(self) -> str:
        return self.predictor.model_name

    def __repr__(self) -> str:
        return f"ImageClassificationPipeline({self.predictor!r})"

    def predict(
        self,
        input: Any,  # noqa: A002 - PaddleX's name
        *,
        batch_size: int | None = None,
        topk: int | None = None,
        device: str | None = None,
    ) -> Iterator[BaseResult]:
        """Yield one classification result per input image, in order.

        Args:
            input: an array (HWC BGR uint8), a path, a URL, a directory, ``{"img": ...}`` or a list of these.
            batch_size: images per engine call; default: the config's.
            topk: classes per result; default: the config's, else the model's.
            device: accepted for PaddleX compatibility; it must be the device the pipeline was created on.

        Raises:
            PredictionError: after all good items were yielded, if any item failed (``.failures`` lists them).
        """
        if device is not None and parse_device(device) != self.predictor.device:
            raise InvalidConfigError(
                f"predict(device={device!r}): the pipeline runs on {self.predictor.device}; "
                "create another pipeline with create_pipeline(..., device=...) to use another device"
            )
        return self.predictor.predict(
            input, batch_size=batch_size or self.config.model.batch_size, topk=topk or self.config.model.topk
        )

    __call__ = predict

    def close(self) -> None:
        self.predictor.close()

    def __enter__(self) -> ImageClassificationPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
