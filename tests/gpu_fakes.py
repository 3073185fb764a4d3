"""Fakes for GPU code on machines without one: a simulated CUDA runtime (host memory), a stand-in ``tensorrt``
whose engine computes with numpy or CuPy on hpi's own buffers, and cuda-python made absent.

scripts/gpu_smoke.py uses the same stand-ins on a real GPU machine (which has no TensorRT), so this module imports
nothing beyond numpy at the top: pytest only where a test hands in its monkeypatch.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import importlib.util
import io
import json
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pytest


_SMOKE = Path(__file__).resolve().parents[1] / "scripts" / "gpu_smoke.py"
CUDA_MODULES = ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart")


def smoke_module():  # noqa: ANN201
    """scripts/gpu_smoke.py as a module (its seeded smoke model is the tiny ONNX classifier of the tests)."""
    spec = importlib.util.spec_from_file_location("hpi_gpu_smoke", _SMOKE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use_simulated_cuda(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Install the simulated cudart (host memory) for this test; returns it, counting live allocations."""
    for name in CUDA_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # records what was there, so the test's end restores it
        monkeypatch.delitem(sys.modules, name)
    return install_cudart(simulate=True)


def without_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every cuda-python import fail, as on a machine without it."""
    for name in CUDA_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


STANDIN_VERSION = "10.99.0"  # not a real TensorRT version: cache keys never mix stand-in plans with real ones
PLAN_MAGIC = b"HPI-STANDIN-PLAN\n"


# ------------------------------------------------------------------------------------------- simulated CUDA


class _Error(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2


class _Stream(int):
    """A cudaStream_t stand-in: an integer handle."""


class _Props:
    name = b"hpi simulated GPU"
    major = 9
    minor = 0


def simulated_cudart() -> types.ModuleType:
    """A ``cuda.bindings.runtime`` stand-in backed by host memory; copies are synchronous ``memmove``s."""
    module = types.ModuleType("cuda.bindings.runtime")
    blocks: dict[int, ctypes.Array] = {}
    streams: set[int] = set()
    ok = _Error.cudaSuccess

    def alloc(n: int):
        block = ctypes.create_string_buffer(int(n))
        blocks[ctypes.addressof(block)] = block
        return ok, ctypes.addressof(block)

    def free(ptr: int):
        return (ok,) if blocks.pop(int(ptr), None) is not None else (_Error.cudaErrorInvalidValue,)

    def memcpy(dst: int, src: int, n: int, kind, stream):  # noqa: ANN001
        if int(stream) not in streams:
            return (_Error.cudaErrorInvalidValue,)
        ctypes.memmove(int(dst), int(src), int(n))
        return (ok,)

    def stream_create():
        handle = _Stream(len(streams) + 1000)
        streams.add(int(handle))
        return ok, handle

    def stream_destroy(stream):  # noqa: ANN001
        streams.discard(int(stream))
        return (ok,)

    module.cudaError_t = _Error
    module.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    module.cudaGetDeviceCount = lambda: (ok, 1)
    module.cudaGetDeviceProperties = lambda i: (ok, _Props()) if int(i) == 0 else (_Error.cudaErrorInvalidValue, None)
    module.cudaSetDevice = lambda i: (ok,) if int(i) == 0 else (_Error.cudaErrorInvalidValue,)
    module.cudaGetErrorString = lambda err: (ok, _Error(int(err)).name.encode())
    module.cudaRuntimeGetVersion = lambda: (ok, 13000)
    module.cudaDriverGetVersion = lambda: (ok, 13000)
    module.cudaMalloc = module.cudaMallocHost = alloc
    module.cudaFree = module.cudaFreeHost = free
    module.cudaMemcpyAsync = memcpy
    module.cudaStreamCreate = stream_create
    module.cudaStreamSynchronize = lambda stream: (ok,) if int(stream) in streams else (_Error.cudaErrorInvalidValue,)
    module.cudaStreamDestroy = stream_destroy
    return module


def _with_spec(module: types.ModuleType, package: bool = False) -> types.ModuleType:
    module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None, is_package=package)
    if package:
        module.__path__ = []
    return module


class CountingRuntime(types.ModuleType):
    """Wraps a cudart module and counts live device and pinned allocations (to check that close frees them)."""

    def __init__(self, inner: types.ModuleType) -> None:
        super().__init__("cuda.bindings.runtime")
        self._inner = inner
        self.live: dict[int, str] = {}
        self.__spec__ = getattr(inner, "__spec__", None) or importlib.machinery.ModuleSpec(self.__name__, None)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._inner, name)

    def _track(self, kind: str, result):  # noqa: ANN001, ANN202
        err, ptr = result
        if int(err) == 0:
            self.live[int(ptr)] = kind
        return result

    def cudaMalloc(self, n):  # noqa: ANN001, ANN201, N802
        return self._track("device", self._inner.cudaMalloc(n))

    def cudaMallocHost(self, n):  # noqa: ANN001, ANN201, N802
        return self._track("pinned", self._inner.cudaMallocHost(n))

    def cudaFree(self, ptr):  # noqa: ANN001, ANN201, N802
        self.live.pop(int(ptr), None)
        return self._inner.cudaFree(ptr)

    def cudaFreeHost(self, ptr):  # noqa: ANN001, ANN201, N802
        self.live.pop(int(ptr), None)
        return self._inner.cudaFreeHost(ptr)


def install_cudart(simulate: bool) -> CountingRuntime:
    """Put a counting cudart where hpi.cuda imports it from (``cuda.bindings.runtime``)."""
    if simulate:
        inner = simulated_cudart()
        package = sys.modules.setdefault("cuda", _with_spec(types.ModuleType("cuda"), package=True))
        bindings = sys.modules.setdefault("cuda.bindings", _with_spec(types.ModuleType("cuda.bindings"), package=True))
        package.bindings = bindings
    else:
        import cuda.bindings as bindings
        from cuda.bindings import runtime as inner  # the real one: this machine must have cuda-python
    counting = CountingRuntime(inner)
    bindings.runtime = counting
    sys.modules["cuda.bindings.runtime"] = counting
    return counting


# ----------------------------------------------------------------------------------- device arrays (CuPy)


class HostArrays:
    """Arrays over simulated device memory (host addresses), computed with numpy."""

    xp = np

    def wrap(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype):  # noqa: ANN201
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(ptr))[:nbytes]
        return raw.view(dtype).reshape(shape)

    def on_stream(self, handle: int):  # noqa: ANN201
        import contextlib

        return contextlib.nullcontext()

    def to_host(self, array) -> np.ndarray:  # noqa: ANN001
        return np.array(array)


class CupyArrays:
    """CuPy arrays over hpi's device pointers, run on hpi's stream."""

    def __init__(self) -> None:
        import cupy

        self.xp = cupy

    def wrap(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype):  # noqa: ANN201
        cupy = self.xp
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        memory = cupy.cuda.UnownedMemory(ptr, nbytes, owner=None)
        return cupy.ndarray(shape, dtype, cupy.cuda.MemoryPointer(memory, 0))

    def on_stream(self, handle: int):  # noqa: ANN201
        return self.xp.cuda.ExternalStream(handle)

    def to_host(self, array) -> np.ndarray:  # noqa: ANN001
        return self.xp.asnumpy(array)


# ------------------------------------------------------------------------------------ stand-in TensorRT


def standin_tensorrt(arrays, counters: dict[str, int]) -> types.ModuleType:  # noqa: ANN001, C901
    """A ``tensorrt`` module with the calls hpi makes; its engine runs the smoke model (Conv-ReLU-GAP-Gemm)."""
    trt = _with_spec(types.ModuleType("tensorrt"))
    trt.__version__ = STANDIN_VERSION

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

    ILogger.Severity = Severity

    class TensorIOMode(enum.Enum):
        INPUT = 1
        OUTPUT = 2

    class DataType(enum.Enum):
        FLOAT = 0

    class Network:
        def __init__(self) -> None:
            self.weights: dict[str, np.ndarray] = {}
            self.input_name = ""

        @property
        def num_inputs(self) -> int:
            return 1

        def get_input(self, i: int):  # noqa: ANN202
            return types.SimpleNamespace(name=self.input_name)

    class OnnxParser:
        def __init__(self, network: Network, logger) -> None:  # noqa: ANN001
            self.network, self.errors = network, []

        def parse_from_file(self, path: str) -> bool:
            return self.parse(Path(path).read_bytes(), path)

        def parse(self, data: bytes, path: str | None = None) -> bool:
            import onnx
            from onnx import numpy_helper

            model = onnx.load_from_string(data)
            ops = [n.op_type for n in model.graph.node]
            if ops != ["Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]:
                self.errors.append(f"the stand-in runs only the smoke model, got {ops}")
                return False
            self.network.weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
            self.network.input_name = model.graph.input[0].name
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def combine(self, other, ignore_mismatch: bool) -> bool:  # noqa: ANN001
            self.data = self.data + other.data
            return True

        def serialize(self) -> bytes:
            return self.data

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list[list[int]]] = {}

        def set_shape(self, name: str, low, opt, high) -> None:  # noqa: ANN001
            self.shapes[name] = [list(low), list(opt), list(high)]

    class BuilderConfig:
        builder_optimization_level = 3

        def __init__(self) -> None:
            self.profiles: list[Profile] = []
            self.timing: TimingCache | None = None

        def set_memory_pool_limit(self, pool, size: int) -> None:  # noqa: ANN001
            pass

        def clear_flag(self, flag) -> None:  # noqa: ANN001
            pass

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.timing = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.timing or TimingCache(b"")

    class Builder:
        def __init__(self, logger) -> None:  # noqa: ANN001
            pass

        def create_network(self, flags: int = 0) -> Network:
            return Network()

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
            counters["builds"] += 1
            if config.timing is not None:
                config.timing.data += b"timing of build %d;" % counters["builds"]
            buffer = io.BytesIO()
            np.savez(buffer, **network.weights)
            header = json.dumps({"input": network.input_name, "profile": config.profiles[0].shapes}).encode()
            return PLAN_MAGIC + len(header).to_bytes(4, "little") + header + buffer.getvalue()

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine, self.addresses, self.shape = engine, {}, None

        def set_input_shape(self, name: str, shape) -> bool:  # noqa: ANN001
            low, _, high = self.engine.profile[name]
            if len(shape) != len(low) or not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high)):
                return False
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name == self.engine.input_name:
                return self.shape
            return (self.shape[0], self.engine.weights["w2"].shape[0])

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            counters["executions"] += 1
            xp, w = arrays.xp, self.engine.device_weights
            with arrays.on_stream(stream_handle):
                x = arrays.wrap(self.addresses[self.engine.input_name], self.shape, np.float32)
                out = arrays.wrap(self.addresses["logits"], self.get_tensor_shape("logits"), np.float32)
                n, _, h, width = self.shape
                padded = xp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
                conv = xp.zeros((n, w["w1"].shape[0], h, width), np.float32)
                for ky in range(3):
                    for kx in range(3):
                        conv += xp.einsum("nchw,oc->nohw", padded[:, :, ky:ky + h, kx:kx + width], w["w1"][:, :, ky, kx])
                conv += w["b1"][None, :, None, None]
                pooled = xp.maximum(conv, 0).mean(axis=(2, 3))
                out[...] = pooled @ w["w2"].T + w["b2"]
            return True

    class Engine:
        def __init__(self, header: dict, weights: dict[str, np.ndarray]) -> None:
            self.input_name = header["input"]
            self.profile = header["profile"]
            self.weights = weights
            self.device_weights = {k: arrays.xp.asarray(v) for k, v in weights.items()}

        @property
        def num_io_tensors(self) -> int:
            return 2

        def get_tensor_name(self, i: int) -> str:
            return [self.input_name, "logits"][i]

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType.FLOAT

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if name == self.input_name else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name == self.input_name:
                return (-1, *self.profile[name][0][1:])
            return (-1, self.weights["w2"].shape[0])

        def get_tensor_profile_shape(self, name: str, index: int) -> list[list[int]]:
            return self.profile[name]

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime:
        def __init__(self, logger) -> None:  # noqa: ANN001
            pass

        def deserialize_cuda_engine(self, data: bytes):  # noqa: ANN202
            counters["deserializations"] += 1
            if counters.pop("refuse_next", 0) or not data.startswith(PLAN_MAGIC):
                return None  # as TensorRT does for a plan from another version or device
            size = int.from_bytes(data[len(PLAN_MAGIC):len(PLAN_MAGIC) + 4], "little")
            start = len(PLAN_MAGIC) + 4
            header = json.loads(data[start:start + size])
            weights = dict(np.load(io.BytesIO(data[start + size:])))
            return Engine(header, weights)

    trt.ILogger, trt.TensorIOMode, trt.DataType = ILogger, TensorIOMode, DataType
    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.BuilderFlag = types.SimpleNamespace(TF32=0)
    trt.nptype = lambda dtype: {DataType.FLOAT: np.float32}[dtype]
    return trt
