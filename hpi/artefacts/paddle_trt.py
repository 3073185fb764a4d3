"""Paddle-TensorRT artefacts for PIR models (``inference.json``): converted with ``paddle.tensorrt.convert``.

Paddle 3 builds TensorRT engines for PIR programs ahead of time ("PIR-TRT", what PaddleX does by default): the
converted program holds ``tensorrt_engine`` ops and is loaded with a plain GPU ``paddle.inference.Config``. The
old program format (``inference.pdmodel``) still goes through ``Config.enable_tensorrt_engine`` at load time (see
:mod:`hpi.backends.paddle`). Unverified on a GPU (docs/guides/gpu.md); written against Paddle 3's
``paddle.tensorrt.export`` API (``Input``, ``TensorRTConfig``, ``PrecisionMode``, ``convert``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpi.artefacts.artefact import Artefact
from hpi.cache import EngineCache
from hpi.errors import BackendUnavailableError, ExportError, InvalidConfigError
from hpi.source import ModelSource

logger = logging.getLogger(__name__)

PIR_TRT_KIND = "paddle-trt"
PREFIX = "inference"  # the converted model is <entry>/inference.json + inference.pdiparams


def tensorrt_reason(pi: Any) -> str | None:
    """Why this Paddle cannot run TensorRT, or None (``pi`` is ``paddle.inference``)."""
    try:
        compiled = tuple(pi.get_trt_compile_version())
        loaded = tuple(pi.get_trt_runtime_version())
    except (AttributeError, RuntimeError) as exc:
        return f"Paddle built without TensorRT ({exc})"
    if not any(compiled):
        return "Paddle built without TensorRT (get_trt_compile_version() is 0.0.0)"
    if not any(loaded):
        return (f"Paddle was built with TensorRT {'.'.join(map(str, compiled))} but cannot load its libraries "
                f"(get_trt_runtime_version() is 0.0.0)")
    return None


def input_names(pi: Any, model_file: Path, params_file: Path) -> list[str]:
    """The model's input names, read from a throwaway CPU predictor.

    oneDNN stays off there, as in PaddleX: creating a oneDNN predictor only to read names has hit a Paddle bug.
    """
    probe = pi.Config(str(model_file), str(params_file))
    probe.disable_gpu()
    probe.disable_glog_info()
    (probe.disable_onednn if hasattr(probe, "disable_onednn") else probe.disable_mkldnn)()
    if model_file.suffix == ".json":
        probe.enable_new_ir(True)
    return list(pi.create_predictor(probe).get_input_names())


def image_profile(source: ModelSource, names: list[str], max_batch: int) -> Mapping[str, tuple[list[int], ...]]:
    """name -> (min, opt, max) shapes of the single image input, from ``inference.yml``'s crop or resize size."""
    spec = source.spec.preprocess
    if spec is None or not spec.output_size:
        raise InvalidConfigError(f"Paddle-TensorRT needs a fixed input size; {source.name} has none in inference.yml")
    if len(names) != 1:
        raise InvalidConfigError(f"Paddle-TensorRT profiles support one input; {source.name} has {names}")
    w, h = spec.output_size
    shape = [3, h, w] if spec.channels_first else [h, w, 3]
    return {names[0]: ([1, *shape], [1, *shape], [max_batch, *shape])}


def convert_pir(source: ModelSource, cache: EngineCache, parts: Mapping[str, Any], precision: str,
                max_batch: int, min_subgraph_size: int) -> Artefact:
    """The PIR model converted for TensorRT (kind ``paddle-trt``); ``parts`` must hold everything it depends on."""
    if source.model_file.suffix != ".json":
        raise ExportError(f"{source.model_file}: paddle.tensorrt.convert takes PIR models (inference.json)")
    import paddle.inference as pi

    try:
        import paddle.tensorrt as paddle_trt
        from paddle.tensorrt.export import Input, PrecisionMode, TensorRTConfig
    except ImportError as exc:
        raise BackendUnavailableError(f"this Paddle has no paddle.tensorrt ({exc}); Paddle built without TensorRT") from exc
    profile = image_profile(source, input_names(pi, source.model_file, source.params_file), max_batch)

    def build(out: Path) -> None:
        inputs = [Input(min_input_shape=lo, optim_input_shape=opt, max_input_shape=hi, name=name)
                  for name, (lo, opt, hi) in profile.items()]
        config = TensorRTConfig(inputs=inputs, min_subgraph_size=min_subgraph_size)
        config.save_model_dir = str(out / PREFIX)
        config.precision_mode = PrecisionMode.FP16 if precision == "fp16" else PrecisionMode.FP32
        logger.info("converting %s with paddle.tensorrt.convert (%s, batch 1..%d)", source.name, precision, max_batch)
        try:
            paddle_trt.convert(str(source.model_file), config)
        except Exception as exc:  # Paddle raises ValueError/RuntimeError with its own message
            raise ExportError(f"paddle.tensorrt.convert failed for {source.model_file}: {exc}") from exc
        if not (out / f"{PREFIX}.json").is_file():
            raise ExportError(f"paddle.tensorrt.convert wrote no {PREFIX}.json for {source.model_file}")

    entry = cache.get_or_build(PIR_TRT_KIND, parts, build)
    return Artefact.cached(PIR_TRT_KIND, parts, entry, f"{PREFIX}.json")
