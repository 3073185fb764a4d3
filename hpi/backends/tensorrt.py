"""Native TensorRT: loads a plan from :mod:`hpi.artefacts.tensorrt` and runs it on hpi's CUDA buffers and stream.

One execution context and one CUDA stream per engine; a device buffer and a pinned host staging buffer per I/O
tensor (:mod:`hpi.cuda`), grown only when a larger batch arrives; ``execute_async_v3`` on the stream, then a
synchronise. A cached plan that TensorRT refuses to deserialise (a driver or library change the key did not
catch) is evicted and rebuilt once.

The pip wheels ``tensorrt-cu12-bindings`` / ``tensorrt-cu13-bindings`` install the module ``tensorrt_bindings``;
the ``tensorrt-cu12`` / ``tensorrt-cu13`` frontend packages re-export it as ``tensorrt``. Either is accepted.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpi import cuda
from hpi.artefacts.fp16 import FP16_CONVERTER_MISSING
from hpi.artefacts.onnx import ONNX_MISSING
from hpi.artefacts.tensorrt import TensorRtConfig, build_cached_plan, evict, relay, relay_errors
from hpi.backends.base import Backend, Capabilities, Engine
from hpi.cache import EngineCache
from hpi.device import Device
from hpi.errors import BackendUnavailableError, InferenceError, InvalidInputError
from hpi.gpu import cuda_device_count
from hpi.source import ModelSource
from hpi.trtlibs import TENSORRT_MISSING, import_tensorrt, module_available, tensorrt_installed

logger = logging.getLogger(__name__)

NO_DEVICE = "no CUDA device"

__all__ = ["TensorRtBackend", "TensorRtConfig", "TensorRtEngine"]


def _no_device_reason(device: Device, count: int) -> str:
    if count > 0:
        return f"{NO_DEVICE} {device} ({count} visible)"
    try:
        cuda.device_count()
    except BackendUnavailableError as exc:
        detail = str(exc)
        if "cudaErrorInsufficientDriver" in detail:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                detail += (f"; no NVIDIA driver is loaded, or it is older than cuda-python "
                           f"{importlib.metadata.version('cuda-python')} needs")
        return f"{NO_DEVICE} ({detail})"
    return NO_DEVICE


@dataclass
class _Buffer:
    """One I/O tensor's device memory and its pinned host staging area, both ``nbytes`` long."""

    device: cuda.DeviceBuffer
    host: cuda.PinnedBuffer

    @property
    def nbytes(self) -> int:
        return self.device.nbytes

    @property
    def device_ptr(self) -> int:
        return self.device.ptr

    def free(self) -> None:
        cuda.free_all(self.host, self.device)


class TensorRtEngine(Engine):
    config: TensorRtConfig

    def _load(self) -> None:
        self._buffers: dict[str, _Buffer] = {}
        self._stream: cuda.Stream | None = None
        self._context = self._engine = self._runtime = None
        self.input_names, self.output_names, self.input_shapes, self.input_dtypes = [], [], {}, {}
        try:
            self._open()
        except BaseException:
            self._close()
            raise

    def _deserialize(self, trt: Any) -> Any:
        """The plan's engine; a plan TensorRT cannot load is evicted from the cache and rebuilt, once."""
        log = relay(trt)
        self._runtime = trt.Runtime(log.trt_logger)
        for attempt in (1, 2):
            plan = build_cached_plan(self.source, self.cache, self.device, self.config)
            engine = self._runtime.deserialize_cuda_engine(plan.path.read_bytes())
            if engine is not None:
                return engine
            if attempt == 1:
                logger.warning("TensorRT could not load the cached plan %s (%s); evicting and rebuilding it",
                               plan.path, log.recent_errors())
                evict(plan)
        raise BackendUnavailableError(
            f"TensorRT could not load the plan it has just rebuilt ({plan.path}): {log.recent_errors()}")

    def _open(self) -> None:
        trt = import_tensorrt()
        cuda.set_device(self.device.index)
        self._engine = self._deserialize(trt)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailableError(f"TensorRT could not create an execution context: {relay_errors()}")
        self._dtypes: dict[str, np.dtype] = {}
        self._batch_range: dict[str, tuple[int, int]] = {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            trt_dtype = self._engine.get_tensor_dtype(name)
            try:
                self._dtypes[name] = np.dtype(trt.nptype(trt_dtype))
            except TypeError as exc:
                raise BackendUnavailableError(f"tensor {name!r} has TensorRT type {trt_dtype}, which numpy "
                                              f"cannot hold") from exc
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.input_names.append(name)
                shape = list(self._engine.get_tensor_shape(name))
                self.input_shapes[name] = [d if d >= 0 else None for d in shape]
                self.input_dtypes[name] = self._dtypes[name]
                low, _, high = self._engine.get_tensor_profile_shape(name, 0)
                self._batch_range[name] = (int(low[0]), int(high[0]))
            else:
                self.output_names.append(name)
        self._stream = cuda.Stream()
        logger.info("tensorrt %s plan for %s loaded on %s (inputs %s)", self.config.precision, self.source.name,
                    self.device, {n: self._batch_range[n] for n in self.input_names})

    def _ensure_buffer(self, name: str, nbytes: int) -> _Buffer:
        """The buffers of ``name``, reallocated only when ``nbytes`` exceeds what they hold."""
        buf = self._buffers.get(name)
        if buf is not None and buf.nbytes >= nbytes:
            return buf
        if buf is not None:
            buf.free()
            del self._buffers[name]
        device = cuda.DeviceBuffer(nbytes, repr(name))
        try:
            host = cuda.PinnedBuffer(nbytes, repr(name))
        except InferenceError:
            device.free()
            raise
        buf = self._buffers[name] = _Buffer(device, host)
        return buf

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        context, stream = self._context, self._stream
        cuda.set_device(self.device.index, InferenceError)
        for name in self.input_names:
            array = feed[name]
            low, high = self._batch_range[name]
            if not low <= array.shape[0] <= high:
                raise InvalidInputError(
                    f"input {name!r}: batch {array.shape[0]} is outside this plan's profile {low}..{high}; "
                    f"rebuild with TensorRtConfig(min_batch=..., max_batch=...) to cover it"
                )
            if not context.set_input_shape(name, tuple(array.shape)):
                raise InvalidInputError(f"input {name!r}: TensorRT rejected shape {list(array.shape)}")
            buf = self._ensure_buffer(name, array.nbytes)
            buf.host.view[: array.nbytes] = array.reshape(-1).view(np.uint8)
            cuda.copy_to_device(buf.device, buf.host, array.nbytes, stream, repr(name))
            context.set_tensor_address(name, buf.device_ptr)
        shapes = {}
        for name in self.output_names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise InferenceError(f"output {name!r} has a data-dependent shape {list(shape)}; not supported")
            shapes[name] = shape
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize
            context.set_tensor_address(name, self._ensure_buffer(name, nbytes).device_ptr)
        if not context.execute_async_v3(stream.handle):
            raise InferenceError(f"{self.describe()}: execute_async_v3 failed: {relay_errors()}")
        outputs = []
        for name in self.output_names:
            buf, shape = self._buffers[name], shapes[name]
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize
            cuda.copy_to_host(buf.host, buf.device, nbytes, stream, repr(name))
            outputs.append((buf, nbytes, shape, self._dtypes[name]))
        stream.synchronize()
        return [buf.host.view[:nbytes].view(dtype).reshape(shape).copy() for buf, nbytes, shape, dtype in outputs]

    def _close(self) -> None:
        for buf in self._buffers.values():
            buf.free()
        self._buffers.clear()
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        # Release order matters to TensorRT: the context before its engine, the engine before its runtime.
        self._context = None
        self._engine = None
        self._runtime = None


class TensorRtBackend(Backend):
    name = "tensorrt"
    capabilities = Capabilities(
        devices=frozenset({"gpu"}),
        precisions={"gpu": ("fp32", "fp16")},
        dynamic_batch=True,
        model_formats=frozenset({"onnx"}),
    )
    config_class = TensorRtConfig
    engine_class = TensorRtEngine

    def _device_reason(self, device: Device) -> str | None:
        if not tensorrt_installed():
            return TENSORRT_MISSING
        if not cuda.cuda_python_installed():
            return cuda.CUDA_PYTHON_MISSING
        if not module_available("onnx"):
            return ONNX_MISSING
        count = cuda_device_count()
        if count <= device.index:
            return _no_device_reason(device, count)
        try:
            import_tensorrt()
        except BackendUnavailableError as exc:
            return str(exc)
        return None

    def engine(self, source: ModelSource, device: Device, config: Any = None,
               cache: EngineCache | None = None) -> Engine:
        engine = super().engine(source, device, config, cache)
        if engine.config.precision == "fp16" and not module_available("onnxconverter_common"):
            raise BackendUnavailableError(f"backend 'tensorrt' cannot build fp16 plans here: {FP16_CONVERTER_MISSING}")
        return engine

    def version(self) -> str:
        try:
            return str(import_tensorrt().__version__)
        except BackendUnavailableError:
            return "unavailable"
