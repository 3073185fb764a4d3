"""ONNX Runtime: CPU, and the CUDA and TensorRT execution providers when onnxruntime-gpu is installed.

A Paddle model is exported to ONNX once (cached); an ONNX source is loaded as is. The session's optimised graph is
not persisted: ORT optimises in well under a second for these models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hpi.backends.base import Backend, BackendConfig, Capabilities, Engine, register_backend
from hpi.device import cuda_device_count, device_signature, resolve_threads
from hpi.errors import BackendUnavailableError, InvalidConfigError
from hpi.export import folded_onnx_path, onnx_path

logger = logging.getLogger(__name__)

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


@dataclass(frozen=True)
class OrtConfig(BackendConfig):
    """ONNX Runtime settings. On GPU, fp16 means the TensorRT execution provider with fp16 enabled."""

    threads: int | None = None  # intra-op threads on CPU; None: the machine's cores
    use_tensorrt: bool = False  # GPU: put the TensorRT EP before the CUDA EP
    graph_optimization: str = "all"  # "disable" | "basic" | "extended" | "all"
    trt_max_batch_size: int = 8  # TensorRT EP profile maximum batch
    # Intra-op threads spin-wait after a run: lowest latency for one model called back to back (PP-LCNet 1.86 vs
    # 2.47 ms without), but two sessions called in turn (a pipeline) take the cores from each other.
    allow_spinning: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.graph_optimization not in ("disable", "basic", "extended", "all"):
            raise InvalidConfigError(f"OrtConfig.graph_optimization: unknown level {self.graph_optimization!r}")
        if self.precision == "bf16":
            raise InvalidConfigError("OrtConfig: bf16 is not supported; use fp32 (CPU) or fp16 (TensorRT EP)")
        if self.precision == "fp16" and not self.use_tensorrt:
            raise InvalidConfigError("OrtConfig: fp16 needs use_tensorrt=True (the TensorRT execution provider)")


class OrtEngine(Engine):
    config: OrtConfig

    def _load(self) -> None:
        import onnxruntime as ort

        cfg = self.config
        model_file = (folded_onnx_path if cfg.fold_preprocess else onnx_path)(self.source, self.cache)
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[cfg.graph_optimization]
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if cfg.allow_spinning else "0")
        if self.device.is_gpu and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # finds CUDA/cuDNN installed by onnxruntime-gpu[cuda,cudnn] (onnxruntime >= 1.21)
        if not self.device.is_gpu:
            options.intra_op_num_threads = resolve_threads(cfg.threads)
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(str(model_file), sess_options=options,
                                             providers=self._providers(model_file))
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        for info in self._session.get_inputs():
            self.input_shapes[info.name] = [d if isinstance(d, int) else None for d in info.shape]
            if info.type in _ORT_DTYPES:
                self.input_dtypes[info.name] = np.dtype(_ORT_DTYPES[info.type])
        active = self._session.get_providers()
        logger.info("onnxruntime session for %s uses %s", self.source.name, active)
        # onnxruntime drops a provider that fails to start and carries on: that would silently turn fp16 into
        # fp32 or GPU into CPU, so it is an error here.
        if self.device.is_gpu and active[0] == "CPUExecutionProvider":
            raise BackendUnavailableError(f"onnxruntime fell back to CPU for {self.device}; providers: {active}")
        if self.config.use_tensorrt and active[0] != "TensorrtExecutionProvider":
            raise BackendUnavailableError(
                f"onnxruntime could not start the TensorRT execution provider on {self.device} "
                f"(it needs TensorRT 10.x libraries); providers: {active}")

    def _providers(self, model_file) -> list:  # noqa: ANN001
        if not self.device.is_gpu:
            return ["CPUExecutionProvider"]
        # Unverified on this project's CI machines (no GPU): written against onnxruntime-gpu's documented options.
        cfg, index = self.config, self.device.index
        providers: list = []
        if cfg.use_tensorrt:
            import importlib.metadata

            from hpi.backends.tensorrt import onnx_inputs

            try:
                trt_version = importlib.metadata.version("tensorrt-cu12-libs")
            except importlib.metadata.PackageNotFoundError:
                trt_version = "system"
            trt_cache = self.cache.get_or_build(
                "ort-trt",
                {"onnx": self.source.content_hash, "precision": cfg.precision,
                 "device": device_signature(self.device), "tensorrt": trt_version,
                 "max_batch": cfg.trt_max_batch_size, "ort": self.backend.version()},
                lambda d: (d / "README").write_text("ONNX Runtime TensorRT EP engine cache\n"),
            )
            options = {
                "device_id": index,
                "trt_fp16_enable": cfg.precision == "fp16",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(trt_cache),
                "trt_timing_cache_enable": True,
            }
            # An explicit batch profile, so one engine serves batch 1..max instead of a rebuild per new shape.
            shapes = [(name, dims) for name, dims in onnx_inputs(model_file) if dims and dims[0] is None]
            if shapes and all(d is not None for _, dims in shapes for d in dims[1:]):
                def profile(n: int) -> str:
                    return ",".join(f"{name}:{n}x" + "x".join(str(d) for d in dims[1:]) for name, dims in shapes)

                options.update(trt_profile_min_shapes=profile(1), trt_profile_opt_shapes=profile(1),
                               trt_profile_max_shapes=profile(cfg.trt_max_batch_size))
            providers.append(("TensorrtExecutionProvider", options))
        providers.append(("CUDAExecutionProvider", {"device_id": index}))
        return providers

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(self.output_names, feed)

    def _close(self) -> None:
        self._session = None


class OrtBackend(Backend):
    name = "onnxruntime"
    capabilities = Capabilities(
        devices=frozenset({"cpu", "gpu"}),
        precisions={"cpu": ("fp32",), "gpu": ("fp32", "fp16")},
        dynamic_batch=True,
        model_formats=frozenset({"onnx"}),
        input_layouts=("NCHW", "NHWC_U8"),
    )
    config_class = OrtConfig
    engine_class = OrtEngine
    requires = (("onnxruntime", "onnxruntime (pip install 'hpi[onnxruntime]')"),)

    def _device_reason(self, device) -> str | None:  # noqa: ANN001
        if not device.is_gpu:
            return None
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "onnxruntime-gpu is not installed (this onnxruntime has no CUDA execution provider)"
        if cuda_device_count() <= device.index:
            return "no CUDA device"
        return None

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__


register_backend(OrtBackend())
