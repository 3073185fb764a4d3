"""Model directory to loaded model: :func:`locate_model` (the one model lookup) and :func:`load_model` (the one
loading path used by ``create_model``, the detector, the pipelines and the benchmark).

Forward only: locate the files -> check the model is of the kind asked for (nothing built yet) -> resolve the
backend choice (:func:`hpi.selection.choice.resolve_choice`) -> build and load the engine through the cache ->
wrap it in the model class. A failure after the engine is loaded closes it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from hpi.backends import get_backend
from hpi.backends.base import Engine
from hpi.backends.choice import BackendChoice
from hpi.cache import EngineCache
from hpi.config import HpiConfig
from hpi.device import Device, parse_device
from hpi.errors import HpiError, UnknownModelError
from hpi.models.base import LoadedModel
from hpi.selection.choice import resolve_choice
from hpi.selection.reduced_decode import cached_verdict
from hpi.source import ModelSource
from hpi.zoo.store import locate

logger = logging.getLogger(__name__)


M = TypeVar("M", bound=LoadedModel)


def locate_model(model_name: str, model_dir: str | os.PathLike[str] | None = None, *, build: bool = False
                 ) -> ModelSource:
    """The model's files: ``model_dir`` if given, else the local model store (real weights before seeded ones),
    else, with ``build``, a zoo build written into the store (seeded weights, logged as a warning).

    Raises:
        ModelSourceError: ``model_dir`` is not a model directory, or its ``Global.model_name`` is another name.
        UnknownModelError: the model is in neither the store nor (with ``build``) the zoo.
    """
    if model_dir is not None:
        return ModelSource.from_path(model_dir, model_name=model_name)
    found = locate(model_name)
    if found is None and build:
        from hpi import zoo

        logger.warning(
            "%s is not in the local model store: building it from the zoo with SEEDED weights (its outputs mean "
            "nothing about accuracy); add trained weights with 'hpi zoo add %s DIR' or set model_dir",
            model_name, model_name,
        )
        found = zoo.build(model_name)
    if found is None:
        raise UnknownModelError(
            f"model {model_name!r} is not in the local model store and no model_dir was given; "
            f"build it offline with 'hpi zoo build {model_name}', add downloaded weights with "
            f"'hpi zoo add {model_name} DIR', or pass model_dir="
        )
    return ModelSource.from_path(found, model_name=model_name)


def _reduced_decode(source: ModelSource, device: Device, choice: BackendChoice, engine: Engine, cfg: HpiConfig,
                    cache: EngineCache) -> tuple[BackendChoice, bool]:
    """High-performance mode's reduced-scale JPEG decoding for this engine: the accuracy gate's cached verdict
    (:func:`hpi.selection.reduced_decode.cached_verdict`), named in the choice's reason."""
    try:
        verdict = cached_verdict(source, device, choice, engine, cfg.gate(), cache)
    except HpiError as exc:
        return dataclasses.replace(choice, reason=f"{choice.reason}; reduced-scale decoding not judged: {exc}"), False
    return dataclasses.replace(choice, reason=f"{choice.reason}; {verdict.describe()}"), verdict.passed


def load_model(
    model_class: type[M],
    source: ModelSource,
    *,
    device: str | Device | None = None,
    use_hpip: bool = False,
    hpi_config: Mapping[str, Any] | HpiConfig | None = None,
    cache_dir: str | os.PathLike[str] | Path | None = None,
    **model_kwargs: Any,
) -> M:
    """Load ``source`` on the chosen backend and wrap it in ``model_class`` (``Predictor``, ``Detector``).

    The model class checks the source first (:meth:`hpi.models.base.LoadedModel.check_source`), so a model of
    another kind fails with an :class:`~hpi.errors.HpiError` before anything is measured or built.

    Args:
        model_class: the model type to return; its constructor takes ``(source, engine, choice, **model_kwargs)``.
        source: from :func:`locate_model`.
        device: "cpu", "gpu" or "gpu:N"; default: gpu:0 if a CUDA device is visible, else cpu.
        use_hpip: False is normal mode, True high-performance mode (see :func:`~hpi.selection.choice.resolve_choice`).
        hpi_config: PaddleX's ``hpi_config`` and hpi's own keys (:class:`~hpi.config.HpiConfig`).
        cache_dir: the engine cache (default: ``$HPI_CACHE_DIR`` or the platform cache directory).
    """
    model_class.check_source(source)
    dev = parse_device(device)
    cfg = HpiConfig.from_dict(hpi_config)
    cache = EngineCache(cache_dir)
    choice = resolve_choice(source, dev, cfg, use_hpip=use_hpip, cache=cache)
    engine = get_backend(choice.backend).engine(source, dev, choice.config, cache).load()
    try:
        if use_hpip and cfg.reduced_decode and model_class.reduced_decode_candidate and source.spec.preprocess:
            choice, model_kwargs["reduced_decode"] = _reduced_decode(source, dev, choice, engine, cfg, cache)
        return model_class(source, engine, choice, **model_kwargs)
    except BaseException:
        engine.close()
        raise
