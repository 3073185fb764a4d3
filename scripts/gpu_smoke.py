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
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the stand-ins live with the test fakes, in tests/gpu_fakes.py

from tests.gpu_fakes import CupyArrays, HostArrays, install_cudart, standin_tensorrt  # noqa: E402

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
    from hpi.device import Device, device_signature
    from hpi.errors import InvalidInputError
    from hpi.gpu import gpu_facts
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
