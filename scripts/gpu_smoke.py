"""GPU smoke check: hpi's device detection, backend reasons, CUDA helpers and native TensorRT runtime path.

Meant for a machine with an NVIDIA GPU, cuda-python (cuda-bindings), CuPy, onnx and onnxruntime (CPU), but no
TensorRT, no onnxruntime-gpu and no network; finishes in well under 5 minutes. It checks:

1. device detection: the GPU's name, compute capability, which source answered, and a stable device signature;
2. every GPU backend's unavailability reason names the missing package (not "no CUDA device");
3. hpi.cuda's pinned/device buffers and stream round-trip data (and CuPy reads the same bytes on the device);
4. the native TensorRT engine's whole runtime path with a stand-in ``tensorrt`` module whose engine computes with
   CuPy on hpi's own device pointers and stream: the plan is built once through the engine cache (and its timing
   cache stored as an entry), buffers are reused and grown, an oversize batch is refused, outputs equal ONNX
   Runtime on CPU, a plan the runtime refuses is evicted and rebuilt once, and all memory is freed on close.

``--simulate-cuda`` replaces cuda-python with host memory and CuPy with numpy, so CI runs the same checks without
a GPU. Exit status 0 when every check passes; ``--json PATH`` writes the results.

    python scripts/gpu_smoke.py                 # on a GPU machine
    python scripts/gpu_smoke.py --simulate-cuda # anywhere
"""

from __future__ import annotations

import argparse
import ctypes
import enum
import importlib.machinery
import io
import json
import platform
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

import numpy as np

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


# ------------------------------------------------------------------------------------------- the model


SMOKE_YML = """\
Global:
  model_name: SmokeNet
PreProcess:
  transform_ops:
  - ResizeImage: {resize_short: 16}
  - CropImage: {size: 16}
  - NormalizeImage: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], scale: 1.0/255.0, order: ''}
  - ToCHWImage: null
PostProcess:
  Topk: {topk: 1, label_list: [a, b, c, d, e]}
"""


def smoke_onnx(path: Path, *, batch: int | str = "N", height: int | str = 16, width: int | str = 16) -> Path:
    """A Conv-ReLU-GAP-Gemm classifier (3xHxW -> 5 logits) with seeded weights whose logits spread over units."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": (rng.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32),
        "b1": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "w2": (rng.standard_normal((5, 8)) * 2.0).astype(np.float32),
        "b2": rng.standard_normal(5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "smoke", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_smoke_model(directory: Path, **dims: int | str) -> Path:
    """A model directory: ``model.onnx`` (:func:`smoke_onnx`) and a PaddleX-style ``inference.yml``."""
    smoke_onnx(directory / "model.onnx", **dims)
    (directory / "inference.yml").write_text(SMOKE_YML, encoding="utf-8")
    return directory


# --------------------------------------------------------------------------------------------- checks


class Report:
    def __init__(self) -> None:
        self.results: list[dict] = []

    def check(self, name: str, fn) -> bool:  # noqa: ANN001
        started = time.perf_counter()
        try:
            detail = fn()
            ok, text = True, detail or ""
        except Exception as exc:  # noqa: BLE001 - a smoke script reports every failure and carries on
            ok, text = False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
        seconds = time.perf_counter() - started
        self.results.append({"check": name, "passed": ok, "detail": str(text), "seconds": round(seconds, 3)})
        print(f"{'PASS' if ok else 'FAIL'}  {name} ({seconds:.2f} s){': ' + str(text) if text else ''}", flush=True)
        return ok


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


PACKAGES = ("tensorrt", "onnxruntime-gpu", "paddlepaddle", "cuda-python", "onnx")


def main(argv: list[str] | None = None) -> int:  # noqa: C901, PLR0915
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate-cuda", action="store_true", help="host memory instead of a GPU, numpy for CuPy")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    runtime = install_cudart(args.simulate_cuda)
    arrays = HostArrays() if args.simulate_cuda else CupyArrays()
    print(f"gpu_smoke: {'simulated CUDA (host memory)' if args.simulate_cuda else 'real CUDA'}, "
          f"python {platform.python_version()}", flush=True)

    from hpi import cuda
    from hpi.backends import available_backends, get_backend
    from hpi.cache import EngineCache
    from hpi.device import Device, device_signature, gpu_facts
    from hpi.errors import InvalidInputError
    from hpi.source import ModelSource

    gpu = Device("gpu", 0)
    report = Report()

    def detection() -> str:
        facts = gpu_facts()
        expect(len(facts.devices) >= 1, f"no CUDA device found: {facts.notes}")
        name, major, minor = facts.devices[0]
        first = device_signature(gpu)
        gpu_facts.cache_clear()
        expect(device_signature(gpu) == first, "the device signature changed between two queries")
        return f"{name}, compute capability {major}.{minor}, from {facts.source}, signature {first}"

    def reasons() -> str:
        found = available_backends(gpu)
        lines = []
        for backend, reason in found.items():
            if "gpu" not in get_backend(backend).capabilities.devices:
                continue
            if reason is not None:
                expect(not reason.startswith("no CUDA device"), f"{backend}: {reason!r} blames the device")
                expect(any(p in reason for p in PACKAGES), f"{backend}: {reason!r} names no package")
            lines.append(f"{backend}: {reason or 'available'}")
        return "; ".join(lines)

    def round_trip() -> str:
        before = dict(runtime.live)
        stream = cuda.Stream()
        data = np.random.default_rng(0).integers(0, 255, 1 << 20, dtype=np.uint8)
        host_in, host_out = cuda.PinnedBuffer(data.nbytes), cuda.PinnedBuffer(data.nbytes)
        device = cuda.DeviceBuffer(data.nbytes)
        host_in.view[:] = data
        cuda.copy_to_device(device, host_in, data.nbytes, stream, "the test bytes")
        stream.synchronize()
        on_device = arrays.to_host(arrays.wrap(device.ptr, (data.nbytes,), np.uint8))
        expect(np.array_equal(on_device, data), "the device holds other bytes than were copied")
        cuda.copy_to_host(host_out, device, data.nbytes, stream, "the test bytes")
        stream.synchronize()
        expect(np.array_equal(host_out.view, data), "the bytes copied back differ")
        cuda.free_all(host_in, host_out, device)
        stream.close()
        expect(runtime.live == before, f"allocations left after free: {runtime.live}")
        return f"{data.nbytes} bytes host -> device -> host on one stream"

    report.check("device detection", detection)
    report.check("GPU backends name the missing package", reasons)
    report.check("hpi.cuda buffers and stream round-trip", round_trip)

    counters = {"builds": 0, "executions": 0, "deserializations": 0}
    sys.modules["tensorrt"] = standin_tensorrt(arrays, counters)
    from hpi.artefacts.tensorrt import TIMING_KIND

    with tempfile.TemporaryDirectory(prefix="hpi-gpu-smoke-") as tmp:
        source = ModelSource.from_path(write_smoke_model(Path(tmp) / "model"))
        cache = EngineCache(Path(tmp) / "cache")
        config = {"min_batch": 1, "opt_batch": 2, "max_batch": 4}
        rng = np.random.default_rng(1)

        def reference(x: np.ndarray) -> np.ndarray:
            import onnxruntime as ort

            session = ort.InferenceSession(str(source.model_file), providers=["CPUExecutionProvider"])
            return session.run(None, {"x": x})[0]

        def runtime_path() -> str:
            reason = get_backend("tensorrt").unavailable_reason(gpu)
            expect(reason is None, f"the tensorrt backend is unavailable with the stand-in: {reason}")
            before = dict(runtime.live)
            engine = get_backend("tensorrt").engine(source, gpu, config, cache=cache)
            with engine:
                expect(counters["builds"] == 1, f"expected one plan build, saw {counters['builds']}")
                worst = 0.0
                for n in (2, 1, 4):
                    x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
                    pointer = engine._buffers["x"].device_ptr if "x" in engine._buffers else None
                    (out,) = engine.run(x)
                    ref = reference(x)
                    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
                    worst = max(worst, float(np.abs(out - ref).max()))
                    if n == 1:
                        expect(engine._buffers["x"].device_ptr == pointer, "a smaller batch reallocated")
                    if n == 4:
                        expect(engine._buffers["x"].nbytes >= x.nbytes, "the input buffer did not grow")
                try:
                    engine.run(rng.standard_normal((5, 3, 16, 16)).astype(np.float32))
                    raise AssertionError("batch 5 ran on a plan whose profile ends at 4")
                except InvalidInputError as exc:
                    expect("outside this plan's profile 1..4" in str(exc), f"unexpected message: {exc}")
                expect(len(runtime.live) > len(before), "the engine holds no device memory while loaded")
            expect(runtime.live == before, f"close() left allocations: {sorted(runtime.live.values())}")
            with get_backend("tensorrt").engine(source, gpu, config, cache=EngineCache(cache.root)) as again:
                again.run(rng.standard_normal((3, 3, 16, 16)).astype(np.float32))
            kinds = [e.kind for e in cache.entries()]
            expect(counters["builds"] == 1, "the second load rebuilt the plan instead of using the cache")
            expect(kinds.count("tensorrt") == 1 and kinds.count(TIMING_KIND) == 1, f"cache entries: {kinds}")
            return (f"1 build, {counters['executions']} executions, max |diff| vs ONNX Runtime CPU {worst:.2e}, "
                    f"entries {sorted(set(kinds))}")

        def eviction() -> str:
            counters["refuse_next"] = 1
            builds = counters["builds"]
            with get_backend("tensorrt").engine(source, gpu, config, cache=cache) as engine:
                x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
                np.testing.assert_allclose(engine.run(x)[0], reference(x), rtol=1e-4, atol=1e-5)
            expect(counters["builds"] == builds + 1, "a refused plan was not rebuilt exactly once")
            expect([e.kind for e in cache.entries()].count("tensorrt") == 1, "the refused plan was not replaced")
            return "a plan the runtime refused was evicted and rebuilt once"

        report.check("native TensorRT runtime path (stand-in engine)", runtime_path)
        report.check("unloadable plan evicted and rebuilt", eviction)

    passed = all(r["passed"] for r in report.results)
    summary = {"simulated": args.simulate_cuda, "passed": passed, "results": report.results,
               "python": platform.python_version()}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"gpu_smoke: {'all checks passed' if passed else 'FAILED'}", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
