"""Pipelines: PaddleX's ``create_pipeline`` over hpi's models.

Two pipelines are registered, each with a default configuration shipped in ``hpi/data/pipelines/<name>.yaml``
(parsed by :mod:`hpi.pipelines.config`):

* ``image_classification``: one classifier; results are the predictor's ``ClassificationResult``.
* ``PP-ShiTuV2``: mainbody detection + feature extraction + faiss retrieval (:mod:`hpi.pipelines.shitu`).

A sub-model without ``model_dir`` comes from the local model store; when the store lacks it, it is built from the
zoo (with seeded weights, which is logged): :func:`hpi.loading.locate_model` with ``build=True``.

>>> import hpi
>>> pipeline = hpi.create_pipeline("image_classification", device="cpu")
>>> for res in pipeline.predict("cat.jpg"):
...     res.print()
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Mapping
from typing import Any

from hpi.errors import InvalidConfigError
from hpi.pipelines.config import load_config, parse_config

# name -> (module, class): an explicit map; modules are imported when a pipeline is created.
PIPELINES: dict[str, tuple[str, str]] = {
    "image_classification": ("hpi.pipelines.image_classification", "ImageClassificationPipeline"),
    "PP-ShiTuV2": ("hpi.pipelines.shitu", "ShiTuPipeline"),
}


def list_pipelines() -> list[str]:
    """Every registered pipeline name."""
    return list(PIPELINES)


# ---------------------------------------------------------------------------------------------------------------
# create_pipeline


def create_pipeline(
    pipeline: str | os.PathLike[str] | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    device: str | None = None,
    use_hpip: bool = False,
    hpi_config: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Build a pipeline by name or YAML path, as PaddleX's ``create_pipeline`` does.

    Args:
        pipeline: ``"image_classification"``, ``"PP-ShiTuV2"``, or the path of a pipeline YAML.
        config: a configuration mapping used instead of the YAML (its ``pipeline_name`` must match ``pipeline``
            when both are given).
        device: "cpu", "gpu" or "gpu:N" for every sub-model; overrides the config's ``device``.
        use_hpip: high-performance mode for every sub-model (a sub-model's own ``use_hpip`` key wins).
        hpi_config: see :class:`hpi.config.HpiConfig`; applied to every sub-model without its own ``hpi_config``.
        cache_dir: the engine cache directory.

    Returns:
        An ``ImageClassificationPipeline`` or a ``ShiTuPipeline``.

    Raises:
        InvalidConfigError: an unknown pipeline, or a config key that is unknown or of the wrong type (named).
        UnknownModelError: a sub-model is neither in ``model_dir``, the store, nor the zoo.

    Example:
        >>> pipeline = create_pipeline("PP-ShiTuV2", device="cpu")
        >>> index = pipeline.build_index("gallery/", "gallery/gallery.txt")
        >>> for res in pipeline.predict("query.jpg", index=index):
        ...     res.print()
    """
    if pipeline is None and config is None:
        raise InvalidConfigError("create_pipeline: give a pipeline name or YAML path, or config=")
    if config is not None:
        mapping = copy.deepcopy(dict(config))
        if pipeline is not None:
            expected = os.fspath(pipeline)
            if expected in PIPELINES:
                mapping.setdefault("pipeline_name", expected)
                if mapping["pipeline_name"] != expected:
                    raise InvalidConfigError(
                        f"config: pipeline_name is {mapping['pipeline_name']!r} but pipeline={expected!r} was requested"
                    )
        parsed = parse_config(mapping, source="config")
    else:
        parsed = load_config(pipeline)  # type: ignore[arg-type]
    module_name, class_name = PIPELINES[parsed.pipeline_name]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_config(parsed, device=device, use_hpip=use_hpip, hpi_config=hpi_config, cache_dir=cache_dir)


__all__ = ["PIPELINES", "create_pipeline", "list_pipelines"]
