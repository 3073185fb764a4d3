"""Paddle Inference: PaddleX's normal mode, and the fp32 reference every other backend is checked against.

CPU runs with oneDNN (3-6x faster than without on this kind of machine) and an explicit thread count; GPU runs
with CUDA and optionally Paddle-TensorRT subgraphs. Paddle's optimisation cache lives in the engine cache,
never in the model directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hpi.backends.base import Backend, BackendConfig, Capabilities, Engine, register_backend
from hpi.device import device_signature, resolve_threads
from hpi.errors import BackendUnavailableError, InvalidConfigError

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
        src = self.source
        cfg = self.config
        config = pi.Config(str(src.model_file), str(src.params_file))
        config.disable_glog_info()
        if src.model_file.suffix == ".json":
            config.enable_new_ir(True)
            config.enable_new_executor(True)
        if self.device.is_gpu:
            config.enable_use_gpu(cfg.gpu_memory_mb, self.device.index)
            if cfg.use_tensorrt:
                self._enable_tensorrt(pi, config)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(resolve_threads(cfg.threads))
            if cfg.enable_onednn:
                config.enable_onednn()
                config.set_onednn_cache_capacity(cfg.onednn_cache_capacity)
                if cfg.precision == "bf16":
                    config.enable_onednn_bfloat16()
            elif cfg.precision == "bf16":
                raise InvalidConfigError("PaddleConfig: bf16 on CPU needs enable_onednn=True")
        if cfg.memory_optim:
            config.enable_memory_optim()
        self._predictor = pi.create_predictor(config)
        self.input_names = list(self._predictor.get_input_names())
        self.output_names = list(self._predictor.get_output_names())
        spec = src.spec.preprocess
        if spec is not None and spec.output_size and len(self.input_names) == 1:
            w, h = spec.output_size
            self.input_shapes = {self.input_names[0]: [None, 3, h, w] if spec.channels_first else [None, h, w, 3]}
            self.input_dtypes = {self.input_names[0]: np.dtype(np.float32)}

    def _enable_tensorrt(self, pi, config) -> None:  # noqa: ANN001 - paddle.inference types
        # Unverified on this project's CI machines (no GPU): written against Paddle 3.x's documented Config API.
        cfg = self.config
        precision = {"fp32": pi.PrecisionType.Float32, "fp16": pi.PrecisionType.Half}[cfg.precision]
        optim_dir = self.cache.get_or_build(
            "paddle-optim",
            {"model": self.source.content_hash, "precision": cfg.precision,
             "device": device_signature(self.device), "paddle": self.backend.version(),
             "trt": str(pi.get_trt_runtime_version()), "max_batch": cfg.trt_max_batch_size},
            lambda d: (d / "README").write_text("Paddle-TensorRT optimisation cache\n"),
        )
        config.set_optim_cache_dir(str(optim_dir))
        config.enable_tensorrt_engine(
            workspace_size=1 << 30,
            max_batch_size=cfg.trt_max_batch_size,
            min_subgraph_size=cfg.trt_min_subgraph_size,
            precision_mode=precision,
            use_static=True,
            use_calib_mode=False,
        )
        spec = self.source.spec.preprocess
        if spec is not None and spec.output_size:
            w, h = spec.output_size
            # The profile needs the input's name before the predictor exists: ask a throwaway CPU predictor.
            probe = pi.Config(str(self.source.model_file), str(self.source.params_file))
            probe.disable_gpu()
            probe.disable_glog_info()
            names = pi.create_predictor(probe).get_input_names()
            if len(names) != 1:
                raise InvalidConfigError(f"Paddle-TensorRT profiles support one input; {self.source.name} has {names}")
            name = names[0]
            config.set_trt_dynamic_shape_info(
                {name: [1, 3, h, w]}, {name: [cfg.trt_max_batch_size, 3, h, w]}, {name: [1, 3, h, w]}
            )

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name, array in feed.items():
            handle = self._predictor.get_input_handle(name)
            handle.reshape(list(array.shape))
            handle.copy_from_cpu(array)
        self._predictor.run()
        return [self._predictor.get_output_handle(n).copy_to_cpu() for n in self.output_names]

    def _close(self) -> None:
        self._predictor = None


class PaddleBackend(Backend):
    name = "paddle"
    capabilities = Capabilities(
        devices=frozenset({"cpu", "gpu"}),
        precisions={"cpu": ("fp32", "bf16"), "gpu": ("fp32", "fp16")},
        dynamic_batch=True,
        model_formats=frozenset({"paddle"}),
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

    def version(self) -> str:
        import paddle

        return paddle.version.full_version


register_backend(PaddleBackend())
