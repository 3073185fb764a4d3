"""ONNX Runtime: CPU, and the CUDA and TensorRT execution providers when onnxruntime-gpu is installed.

A Paddle model is exported to ONNX once (:mod:`hpi.artefacts.onnx`); an ONNX source is loaded as is. The session's
optimised graph is not persisted: ORT optimises in well under a second for these models.

On the GPU with ``use_tensorrt``, TensorRT's libraries are loaded before the session is created (pip installs them
where the loader does not look, and ``onnxruntime.preload_dlls()`` only loads CUDA and cuDNN), the session is
created with fallback disabled, and a provider that did not start is an error that says why. The provider's
engine cache is a sealed entry built by a warm-up (:mod:`hpi.artefacts.runtime_cache`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hpi.artefacts.artefact import Artefact
from hpi.artefacts.onnx import model_onnx, onnx_inputs
from hpi.artefacts.quantize import quantize_onnx
from hpi.artefacts.runtime_cache import ScratchCopy, warmed_copy
from hpi.backends.base import Backend, BackendConfig, Capabilities, Engine, library_refusal
from hpi.calibration import calibration_set
from hpi.device import device_signature, resolve_threads
from hpi.errors import BackendUnavailableError, InvalidConfigError
from hpi.gpu import cuda_device_count, gpu_facts
from hpi.trtlibs import TensorRtLibs, preload_tensorrt

logger = logging.getLogger(__name__)

ORT_TRT_MAJOR = 10  # ONNX Runtime's TensorRT provider links libnvinfer.so.10
TRT_PROVIDER = "TensorrtExecutionProvider"

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
    calibration_data: str | None = None  # int8 (CPU): the calibration images' directory; None: the built-in photos

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.graph_optimization not in ("disable", "basic", "extended", "all"):
            raise InvalidConfigError(f"OrtConfig.graph_optimization: unknown level {self.graph_optimization!r}")
        if self.precision == "bf16":
            raise InvalidConfigError("OrtConfig: bf16 is not supported; use fp32 (CPU) or fp16 (TensorRT EP)")
        if self.precision == "int8" and self.use_tensorrt:
            raise InvalidConfigError("OrtConfig: int8 is a CPU precision here (static QDQ quantisation); "
                                     "the TensorRT provider takes fp32 or fp16")
        if self.precision == "fp16" and not self.use_tensorrt:
            raise InvalidConfigError("OrtConfig: fp16 needs use_tensorrt=True (the TensorRT execution provider)")


class OrtEngine(Engine):
    config: OrtConfig

    def _load(self) -> None:
        import onnxruntime as ort

        cfg = self.config
        self._scratch: ScratchCopy | None = None
        base = quantize_onnx(self.source, self.cache, calibration_set(cfg.calibration_data)) \
            if cfg.precision == "int8" else None
        model = model_onnx(self.source, self.cache, fold_preprocess=cfg.fold_preprocess, base=base)
        options = self._options(ort)
        providers = self._providers(ort, model)
        # enable_fallback=0: a provider that fails to start raises instead of the session quietly dropping it.
        with library_refusal(f"ONNX Runtime cannot load the {cfg.precision} model of {self.source.name}"):
            self._session = ort.InferenceSession(str(model.path), sess_options=options, providers=providers,
                                                 enable_fallback=0)
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        for info in self._session.get_inputs():
            self.input_shapes[info.name] = [d if isinstance(d, int) else None for d in info.shape]
            if info.type in _ORT_DTYPES:
                self.input_dtypes[info.name] = np.dtype(_ORT_DTYPES[info.type])
        active = self._session.get_providers()
        logger.info("onnxruntime session for %s uses %s", self.source.name, active)
        check_providers(active, self.device, cfg.use_tensorrt)

    def _options(self, ort):  # noqa: ANN001, ANN202 - the onnxruntime module and its SessionOptions
        cfg = self.config
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[cfg.graph_optimization]
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if cfg.allow_spinning else "0")
        if not self.device.is_gpu:
            options.intra_op_num_threads = resolve_threads(cfg.threads)
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return options

    def _providers(self, ort, model: Artefact) -> list:  # noqa: ANN001
        if not self.device.is_gpu:
            return ["CPUExecutionProvider"]
        # Unverified on a GPU (docs/guides/gpu.md): written against onnxruntime-gpu's documented options.
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA and cuDNN installed by onnxruntime-gpu[cuda,cudnn] (onnxruntime >= 1.21)
        cuda_provider = ("CUDAExecutionProvider", {"device_id": self.device.index})
        if not self.config.use_tensorrt:
            return [cuda_provider]
        libs = preload_tensorrt(ORT_TRT_MAJOR)
        parts = ort_trt_cache_parts(model, self.config, device_signature(self.device), libs, self.backend.version())

        def warm_up(directory) -> None:  # noqa: ANN001
            session = ort.InferenceSession(
                str(model.path), sess_options=self._options(ort), enable_fallback=0,
                providers=[(TRT_PROVIDER, self._trt_options(model, directory)), cuda_provider])
            check_providers(session.get_providers(), self.device, True)
            feed = warm_up_feed(session, model.path)
            if feed is not None:
                session.run(None, feed)

        self._scratch = warmed_copy(self.cache, "ort-trt", parts, warm_up,
                                    "ONNX Runtime TensorRT provider engine cache, built by a warm-up")
        return [(TRT_PROVIDER, self._trt_options(model, self._scratch.path)), cuda_provider]

    def _trt_options(self, model: Artefact, cache_dir) -> dict:  # noqa: ANN001
        cfg = self.config
        options = {
            "device_id": self.device.index,
            "trt_fp16_enable": cfg.precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True,
        }
        # An explicit batch profile, so one engine serves batch 1..max instead of a rebuild per new shape.
        shapes = [(name, dims) for name, dims in onnx_inputs(model.path) if dims and dims[0] is None]
        if shapes and all(d is not None for _, dims in shapes for d in dims[1:]):
            def profile(n: int) -> str:
                return ",".join(f"{name}:{n}x" + "x".join(str(d) for d in dims[1:]) for name, dims in shapes)

            options.update(trt_profile_min_shapes=profile(1), trt_profile_opt_shapes=profile(1),
                           trt_profile_max_shapes=profile(cfg.trt_max_batch_size))
        return options

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(self.output_names, feed)

    def _close(self) -> None:
        self._session = None
        if getattr(self, "_scratch", None) is not None:
            self._scratch.close()
            self._scratch = None


def ort_trt_cache_parts(model: Artefact, config: OrtConfig, device_sig: str, libs: TensorRtLibs,
                        ort_version: str) -> dict:
    """What determines the TensorRT provider's engines: the ONNX file it is fed (ORT names engines by file and
    node names, not by weights), folding, graph optimisation, precision, profile, GPU and the TensorRT loaded."""
    return {"onnx": model.key, "onnx_kind": model.kind, "fold": config.fold_preprocess,
            "graph_optimization": config.graph_optimization, "precision": config.precision,
            "max_batch": config.trt_max_batch_size, "device": device_sig, "tensorrt": libs.key, "ort": ort_version}


def check_providers(active: list[str], device, use_tensorrt: bool) -> None:  # noqa: ANN001
    """onnxruntime drops a provider that fails to start and carries on: that would silently turn fp16 into fp32
    or GPU into CPU, so it is an error here."""
    if device.is_gpu and active[0] == "CPUExecutionProvider":
        raise BackendUnavailableError(f"onnxruntime fell back to CPU for {device}; providers: {active}")
    if use_tensorrt and active[0] != TRT_PROVIDER:
        raise BackendUnavailableError(
            f"onnxruntime could not start the TensorRT execution provider on {device} (it needs the TensorRT "
            f"{ORT_TRT_MAJOR}.x libraries and the CUDA major this onnxruntime-gpu was built for); providers: {active}")


def warm_up_feed(session, model_file) -> dict | None:  # noqa: ANN001
    """Zeros at batch 1 for every input, or None when an input has a dynamic dim besides the batch."""
    feed = {}
    dims = dict(onnx_inputs(model_file))
    for info in session.get_inputs():
        shape = [1, *dims.get(info.name, [None])[1:]]
        if any(d is None for d in shape) or info.type not in _ORT_DTYPES:
            return None
        feed[info.name] = np.zeros(shape, _ORT_DTYPES[info.type])
    return feed


class OrtBackend(Backend):
    name = "onnxruntime"
    capabilities = Capabilities(
        devices=frozenset({"cpu", "gpu"}),
        precisions={"cpu": ("fp32", "int8"), "gpu": ("fp32", "fp16")},
        dynamic_batch=True,
        model_formats=frozenset({"onnx"}),
        input_layouts=("NCHW", "NHWC_U8"),
        tensorrt_subgraphs=True,
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
            facts = gpu_facts()
            return f"no CUDA device {device} ({'; '.join(facts.notes) or facts.source})"
        return None

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__

