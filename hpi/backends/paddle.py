"""Paddle Inference: PaddleX's normal mode, and the fp32 reference every other backend is checked against.

CPU runs with oneDNN (3-6x faster than without on this kind of machine) and an explicit thread count; GPU runs
with CUDA and optionally TensorRT (``use_tensorrt``): a PIR model (``inference.json``) is converted ahead of time
by :mod:`hpi.artefacts.paddle_trt` and loaded with a plain GPU config; an old-format model (``inference.pdmodel``)
uses ``enable_tensorrt_engine``, whose optimisation cache is a sealed engine-cache entry built by a warm-up
(:mod:`hpi.artefacts.runtime_cache`), never the model directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hpi.artefacts.paddle_trt import convert_pir, image_profile, input_names, tensorrt_reason
from hpi.artefacts.runtime_cache import ScratchCopy, warmed_copy
from hpi.backends.base import Backend, BackendConfig, Capabilities, Engine, library_refusal
from hpi.cache import EngineCache
from hpi.device import Device, device_signature, resolve_threads
from hpi.errors import BackendUnavailableError, InvalidConfigError
from hpi.source import ModelSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaddleConfig(BackendConfig):
    """Paddle Inference settings. ``precision`` other than fp32 means Paddle-TensorRT (GPU) or oneDNN bf16 (CPU)."""

    threads: int | None = None  # CPU math threads; None: the machine's cores (PaddleX defaults to 10)
    enable_onednn: bool = True  # oneDNN kernels on CPU
    onednn_cache_capacity: int = 10  # shapes oneDNN keeps primitives for (dynamic batch)
    use_tensorrt: bool = False  # GPU only: run supported subgraphs with Paddle-TensorRT
    trt_max_batch_size: int = 8  # GPU/TensorRT: the dynamic-shape profile's maximum batch
    trt_min_subgraph_size: int = 3
    gpu_memory_mb: int = 500  # initial GPU memory pool
    memory_optim: bool = True

    ALIASES = {
        "cpu_num_threads": "threads",
        "enable_mkldnn": "enable_onednn",
        "mkldnn_cache_capacity": "onednn_cache_capacity",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.precision == "fp16" and not self.use_tensorrt:
            raise InvalidConfigError("PaddleConfig: fp16 needs use_tensorrt=True (Paddle-TensorRT on GPU)")


class PaddleEngine(Engine):
    config: PaddleConfig

    def _load(self) -> None:
        try:
            import paddle.inference as pi
        except ImportError as exc:  # unavailable_reason checked the spec; the import itself can still fail
            raise BackendUnavailableError(f"paddlepaddle failed to import: {exc}") from exc
        src, cfg = self.source, self.config
        self._scratch: ScratchCopy | None = None
        model_file, params_file, optim_dir = src.model_file, src.params_file, None
        if self.device.is_gpu and cfg.use_tensorrt:
            # Unverified on a GPU (docs/guides/gpu.md): written against Paddle 3.x's documented APIs.
            if src.model_file.suffix == ".json":
                converted = convert_pir(src, self.cache, self._trt_parts(), cfg.precision, cfg.trt_max_batch_size,
                                        cfg.trt_min_subgraph_size)
                model_file, params_file = converted.path, converted.path.with_suffix(".pdiparams")
            else:
                self._scratch = warmed_copy(self.cache, "paddle-optim", self._trt_parts(),
                                            lambda d: self._warm_up(pi, d),
                                            "Paddle-TensorRT optimisation cache, built by a warm-up")
                optim_dir = self._scratch.path
        with library_refusal(f"Paddle Inference cannot build a {cfg.precision} predictor for {src.name}"):
            self._predictor = pi.create_predictor(self._config(pi, model_file, params_file, optim_dir))
        self.input_names = list(self._predictor.get_input_names())
        self.output_names = list(self._predictor.get_output_names())
        spec = src.spec.preprocess
        if spec is not None and spec.output_size and len(self.input_names) == 1:
            w, h = spec.output_size
            self.input_shapes = {self.input_names[0]: [None, 3, h, w] if spec.channels_first else [None, h, w, 3]}
            self.input_dtypes = {self.input_names[0]: np.dtype(np.float32)}

    def _trt_parts(self) -> dict:
        """What a TensorRT build of this model depends on: the whole config, the GPU, Paddle and its TensorRT."""
        import paddle.inference as pi

        return {"model": self.source.content_hash, "format": self.source.model_file.suffix,
                "config": self.config.to_dict(), "device": device_signature(self.device),
                "paddle": self.backend.version(), "trt": ".".join(map(str, pi.get_trt_runtime_version()))}

    def _config(self, pi, model_file, params_file, optim_dir):  # noqa: ANN001, ANN202 - paddle.inference types
        cfg = self.config
        config = pi.Config(str(model_file), str(params_file))
        config.disable_glog_info()
        if str(model_file).endswith(".json"):
            config.enable_new_ir(True)
            config.enable_new_executor(True)
        if self.device.is_gpu:
            config.enable_use_gpu(cfg.gpu_memory_mb, self.device.index)
            if optim_dir is not None:
                self._enable_tensorrt(pi, config, optim_dir)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(resolve_threads(cfg.threads))
            if cfg.enable_onednn:
                config.enable_onednn()
                config.set_onednn_cache_capacity(cfg.onednn_cache_capacity)
                if cfg.precision == "bf16":
                    config.enable_onednn_bfloat16()
            else:  # Paddle 3 turns oneDNN on by default: off must be said
                if cfg.precision == "bf16":
                    raise InvalidConfigError("PaddleConfig: bf16 on CPU needs enable_onednn=True")
                config.disable_onednn()
        if cfg.memory_optim:
            config.enable_memory_optim()
        return config

    def _enable_tensorrt(self, pi, config, optim_dir) -> None:  # noqa: ANN001 - paddle.inference types
        """The old-format route: TensorRT subgraphs built by Paddle Inference, serialised into ``optim_dir``."""
        cfg = self.config
        precision = {"fp32": pi.PrecisionType.Float32, "fp16": pi.PrecisionType.Half}[cfg.precision]
        config.set_optim_cache_dir(str(optim_dir))
        config.enable_tensorrt_engine(
            workspace_size=1 << 30,
            max_batch_size=cfg.trt_max_batch_size,
            min_subgraph_size=cfg.trt_min_subgraph_size,
            precision_mode=precision,
            use_static=True,
            use_calib_mode=False,
        )
        names = input_names(pi, self.source.model_file, self.source.params_file)
        (name, (low, opt, high)), = image_profile(self.source, names, cfg.trt_max_batch_size).items()
        config.set_trt_dynamic_shape_info({name: low}, {name: high}, {name: opt})  # Paddle's order: min, max, opt

    def _warm_up(self, pi, directory) -> None:  # noqa: ANN001
        """Create a TensorRT predictor whose optimisation cache is ``directory`` and run it once."""
        predictor = pi.create_predictor(self._config(pi, self.source.model_file, self.source.params_file, directory))
        names = input_names(pi, self.source.model_file, self.source.params_file)
        (name, (low, _, _)), = image_profile(self.source, names, self.config.trt_max_batch_size).items()
        handle = predictor.get_input_handle(name)
        handle.reshape(low)
        handle.copy_from_cpu(np.zeros(low, np.float32))
        predictor.run()

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name, array in feed.items():
            handle = self._predictor.get_input_handle(name)
            handle.reshape(list(array.shape))
            handle.copy_from_cpu(array)
        self._predictor.run()
        return [self._predictor.get_output_handle(n).copy_to_cpu() for n in self.output_names]

    def _close(self) -> None:
        self._predictor = None
        if getattr(self, "_scratch", None) is not None:
            self._scratch.close()
            self._scratch = None


class PaddleBackend(Backend):
    name = "paddle"
    capabilities = Capabilities(
        devices=frozenset({"cpu", "gpu"}),
        precisions={"cpu": ("fp32", "bf16"), "gpu": ("fp32", "fp16")},
        declined={"cpu": {"int8": "Paddle Inference runs int8 on CPU only from a model quantised with PaddleSlim, "
                                  "which hpi does not produce"}},
        dynamic_batch=True,
        model_formats=frozenset({"paddle"}),
        tensorrt_subgraphs=True,
        batched_nms=True,
    )
    config_class = PaddleConfig
    engine_class = PaddleEngine
    requires = (("paddle", "paddlepaddle (pip install 'hpi[paddle]')"),)

    def _device_reason(self, device) -> str | None:  # noqa: ANN001
        if device.is_gpu:
            import paddle

            if not paddle.device.is_compiled_with_cuda():
                return "the installed paddlepaddle is the CPU build (install paddlepaddle-gpu)"
            if paddle.device.cuda.device_count() <= device.index:
                return "no CUDA device"
        return None

    def engine(self, source: ModelSource, device: Device, config=None,  # noqa: ANN001
               cache: EngineCache | None = None) -> Engine:
        engine = super().engine(source, device, config, cache)
        if device.is_gpu and engine.config.use_tensorrt:
            import paddle.inference as pi

            reason = tensorrt_reason(pi)
            if reason:
                raise BackendUnavailableError(f"backend 'paddle' cannot use TensorRT on {device}: {reason}")
        return engine

    def version(self) -> str:
        import paddle

        return paddle.version.full_version

