"""``create_model``: PaddleX's entry point, one function for every model hpi runs.

The model's own ``inference.yml`` says its task; the task picks the model type (:data:`MODEL_TYPES`), and
:func:`hpi.loading.load_model` does the rest. A classifier or feature model comes back as a
:class:`~hpi.models.classification.Predictor`, a detector as a :class:`~hpi.models.detection.Detector`, as
PaddleX's ``create_model`` returns a detection predictor for a detection model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hpi.config import HpiConfig
from hpi.device import Device
from hpi.errors import InvalidConfigError
from hpi.loading import load_model, locate_model
from hpi.models.base import LoadedModel
from hpi.models.classification import Predictor
from hpi.models.detection import Detector

# inference.yml task -> the model type that runs it
MODEL_TYPES: dict[str, type[LoadedModel]] = {task: cls for cls in (Predictor, Detector) for task in cls.tasks}


def create_model(
    model_name: str,
    model_dir: str | os.PathLike[str] | None = None,
    *,
    device: str | Device | None = None,
    use_hpip: bool = False,
    hpi_config: Mapping[str, Any] | HpiConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> LoadedModel:
    """Load a model for inference, as PaddleX's ``create_model`` does.

    Args:
        model_name: the PaddleX model name; must equal ``Global.model_name`` in the model's ``inference.yml``.
        model_dir: a PaddleX inference directory (or ONNX + inference.yml). Default: the local model store.
        device: "cpu", "gpu" or "gpu:N". Default: gpu:0 if a CUDA device is visible, else cpu.
        use_hpip: False is normal mode (Paddle Inference fp32); True is high-performance mode.
        hpi_config: PaddleX's keys (``auto_config``, ``backend``, ``backend_config``) and hpi's own; see
            :class:`hpi.config.HpiConfig`.
        cache_dir: the engine cache (default: ``$HPI_CACHE_DIR`` or the platform cache directory).
        **options: options of the model type: ``topk`` (classification: default classes per result).

    Returns:
        A :class:`~hpi.models.classification.Predictor` for classification and feature (embedding) models, a
        :class:`~hpi.models.detection.Detector` for detection models.

    Raises:
        InvalidConfigError: the model's task has no model type here, or an option does not belong to it; raised
            before anything is built.

    Example:
        >>> model = create_model("PP-LCNet_x1_0", device="cpu", use_hpip=True)
        >>> next(model.predict("cat.jpg")).print()
    """
    source = locate_model(model_name, model_dir)
    model_type = MODEL_TYPES.get(source.spec.task)
    if model_type is None:
        raise InvalidConfigError(
            f"{source.name} is a {source.spec.task} model; create_model runs {', '.join(sorted(MODEL_TYPES))} models"
        )
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(model_type.options))
    if unknown:
        raise InvalidConfigError(
            f"{source.name} is a {source.spec.task} model: option(s) {unknown} do not apply; "
            f"its options: {sorted(model_type.options) or 'none'}"
        )
    return load_model(model_type, source, device=device, use_hpip=use_hpip, hpi_config=hpi_config,
                      cache_dir=cache_dir, **options)
