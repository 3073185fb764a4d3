"""Tests for hpi/backends/tensorrt.py (building plans is tested in tests/artefacts/test_tensorrt.py).

Most tests run anywhere: registration, the unavailable reasons, and the refusal of fp16 without the converter.
The whole runtime path also runs here against a stand-in TensorRT on simulated CUDA (scripts/gpu_smoke.py, run by
tests/test_gpu_smoke.py). The tests marked ``gpu`` and ``tensorrt`` build and run real plans; they are skipped, with the backend's own reason, where TensorRT or a
CUDA device is missing (select them on a GPU job with ``pytest -m tensorrt``).

Tolerances against ONNX Runtime on CPU (fp32), on logits of magnitude up to about 15:
fp32 plans (TF32 off) ``rtol=1e-3, atol=1e-4``; fp16 plans ``rtol=1e-2, atol=5e-2`` and the same top-1.
"""

from __future__ import annotations

import numpy as np
import pytest

from hpi import cuda, trtlibs
from hpi.artefacts import tensorrt as trt_build
from hpi.backends import get_backend, list_backends
from hpi.backends import tensorrt as trt_backend
from hpi.backends.tensorrt import TensorRtBackend, TensorRtConfig
from hpi.cache import EngineCache
from hpi.device import Device
from hpi.errors import BackendUnavailableError, InvalidInputError
from hpi.gpu import cuda_device_count
from tests.tiny_onnx import ort_reference, random_batch, tiny_onnx, tiny_source

GPU0 = Device("gpu", 0)
TRT_REASON = get_backend("tensorrt").unavailable_reason(GPU0)
requires_trt_gpu = pytest.mark.skipif(TRT_REASON is not None, reason=f"tensorrt on gpu:0: {TRT_REASON}")

FP32_TOL = {"rtol": 1e-3, "atol": 1e-4}
FP16_TOL = {"rtol": 1e-2, "atol": 5e-2}

# ----------------------------------------------------------------------------- registration and reasons


def test_backend_is_registered_with_its_capabilities():
    assert "tensorrt" in list_backends()
    backend = get_backend("tensorrt")
    assert isinstance(backend, TensorRtBackend)
    caps = backend.capabilities
    assert caps.devices == frozenset({"gpu"})
    assert dict(caps.precisions) == {"gpu": ("fp32", "fp16")}
    assert caps.dynamic_batch is True
    assert caps.model_formats == frozenset({"onnx"})
    assert backend.config_class is TensorRtConfig


def test_not_available_on_cpu():
    assert get_backend("tensorrt").unavailable_reason(Device("cpu")) == "tensorrt does not run on cpu"


def _pretend_installed(monkeypatch, *missing: str) -> None:
    real = trtlibs.module_available

    def available(name: str) -> bool:
        return name not in missing and (name in {"tensorrt", "tensorrt_bindings", "onnx"} or real(name))

    monkeypatch.setattr(trt_backend, "module_available", available)
    monkeypatch.setattr(trt_backend, "tensorrt_installed", lambda: available("tensorrt") or available("tensorrt_bindings"))
    monkeypatch.setattr(cuda, "cuda_python_installed", lambda: not {"cuda.bindings", "cuda.cudart"} & set(missing))


def test_reason_when_tensorrt_is_missing(monkeypatch):
    _pretend_installed(monkeypatch, "tensorrt", "tensorrt_bindings")
    assert get_backend("tensorrt").unavailable_reason(GPU0) == trtlibs.TENSORRT_MISSING
    assert "pip install 'hpi[gpu-cu12]'" in trtlibs.TENSORRT_MISSING


def test_reason_when_cuda_python_is_missing(monkeypatch):
    _pretend_installed(monkeypatch, "cuda.bindings", "cuda.cudart")
    assert get_backend("tensorrt").unavailable_reason(GPU0).startswith("cuda-python is not installed")


def test_reason_when_there_is_no_cuda_device(monkeypatch):
    _pretend_installed(monkeypatch)
    monkeypatch.setattr(trt_backend, "cuda_device_count", lambda: 0)
    assert get_backend("tensorrt").unavailable_reason(GPU0).startswith("no CUDA device")


def test_reason_when_the_device_index_is_past_the_visible_devices(monkeypatch):
    _pretend_installed(monkeypatch)
    monkeypatch.setattr(trt_backend, "cuda_device_count", lambda: 1)
    assert get_backend("tensorrt").unavailable_reason(Device("gpu", 1)) == "no CUDA device gpu:1 (1 visible)"


@pytest.mark.skipif(cuda_device_count() > 0, reason="a CUDA device is visible: this checks the no-GPU message")
def test_reason_on_a_machine_without_gpu():
    reason = get_backend("tensorrt").unavailable_reason(GPU0)
    assert reason is not None
    assert reason.startswith(("tensorrt is not installed (pip install", "cuda-python is not installed",
                              "onnx is not installed", "no CUDA device"))


@pytest.mark.skipif(TRT_REASON is None, reason="tensorrt can run here")
def test_engine_raises_the_reason_at_selection_time(tmp_path):
    source = tiny_source(tmp_path / "m")
    with pytest.raises(BackendUnavailableError, match="backend 'tensorrt' is not available on gpu:0") as info:
        get_backend("tensorrt").engine(source, GPU0, cache=EngineCache(tmp_path / "cache"))
    assert TRT_REASON in str(info.value)


def test_fp16_engine_without_the_onnx_converter_is_refused_at_selection(monkeypatch, tmp_path):
    source = tiny_source(tmp_path / "m")
    monkeypatch.setattr(TensorRtBackend, "_device_reason", lambda self, device: None)
    real = trtlibs.module_available
    monkeypatch.setattr(trt_backend, "module_available", lambda name: name != "onnxconverter_common" and real(name))
    backend = get_backend("tensorrt")
    with pytest.raises(BackendUnavailableError, match="pip install onnxconverter-common"):
        backend.engine(source, GPU0, {"precision": "fp16"}, cache=EngineCache(tmp_path / "cache"))
    engine = backend.engine(source, GPU0, {"precision": "fp32"}, cache=EngineCache(tmp_path / "cache"))
    assert not engine.loaded  # constructing an engine builds nothing


# -------------------------------------------------------------------------------- real plans on a GPU


@pytest.fixture
def tiny(tmp_path):
    return tiny_source(tmp_path / "tiny"), EngineCache(tmp_path / "cache")


@pytest.mark.gpu
@pytest.mark.tensorrt
@requires_trt_gpu
def test_build_plan_returns_a_plan_tensorrt_can_load(tmp_path):
    onnx_file = tiny_onnx(tmp_path / "model.onnx")
    plan = trt_build.build_plan(onnx_file, TensorRtConfig(max_batch=4))
    assert isinstance(plan, bytes) and len(plan) > 0
    trt = trtlibs.import_tensorrt()
    runtime = trt.Runtime(trt_build.relay(trt).trt_logger)
    engine = runtime.deserialize_cuda_engine(plan)
    assert engine is not None and engine.num_io_tensors == 2


@pytest.mark.gpu
@pytest.mark.tensorrt
@requires_trt_gpu
def test_fp32_plan_matches_onnxruntime_cpu_at_batch_1_and_4(tiny):
    source, cache = tiny
    backend = get_backend("tensorrt")
    with backend.engine(source, GPU0, {"opt_batch": 4, "max_batch": 8}, cache=cache) as engine:
        assert engine.input_names == ["x"] and engine.output_names == ["logits"]
        assert engine.input_shapes["x"] == [None, 3, 16, 16]
        for n in (1, 4):
            x = random_batch(n, seed=n)
            (out,) = engine.run(x)
            assert out.shape == (n, 5) and out.dtype == np.float32
            np.testing.assert_allclose(out, ort_reference(source.model_file, x), **FP32_TOL)


@pytest.mark.gpu
@pytest.mark.tensorrt
@requires_trt_gpu
def test_fp16_plan_matches_onnxruntime_cpu_within_fp16_tolerance(tiny):
    pytest.importorskip("onnxconverter_common")
    source, cache = tiny
    with get_backend("tensorrt").engine(source, GPU0, {"precision": "fp16", "max_batch": 4}, cache=cache) as engine:
        for n in (1, 4):
            x = random_batch(n, seed=10 + n)
            (out,) = engine.run(x)
            reference = ort_reference(source.model_file, x)
            assert out.dtype == np.float32
            np.testing.assert_allclose(out, reference, **FP16_TOL)
            assert (out.argmax(1) == reference.argmax(1)).all()


@pytest.mark.gpu
@pytest.mark.tensorrt
@requires_trt_gpu
def test_batches_outside_the_profile_are_refused_and_buffers_only_grow(tiny):
    source, cache = tiny
    with get_backend("tensorrt").engine(source, GPU0, {"min_batch": 1, "max_batch": 8}, cache=cache) as engine:
        engine.run(random_batch(4))
        pointer = engine._buffers["x"].device_ptr
        engine.run(random_batch(1))
        assert engine._buffers["x"].device_ptr == pointer  # a smaller batch reuses the buffers
        engine.run(random_batch(8))
        assert engine._buffers["x"].nbytes >= random_batch(8).nbytes
        with pytest.raises(InvalidInputError, match="outside this plan's profile 1..8"):
            engine.run(random_batch(9))
    assert engine._buffers == {}  # closing freed them


@pytest.mark.gpu
@pytest.mark.tensorrt
@requires_trt_gpu
def test_second_load_uses_the_cached_plan(tiny, monkeypatch):
    source, cache = tiny
    backend = get_backend("tensorrt")
    x = random_batch(2)
    with backend.engine(source, GPU0, {"max_batch": 4}, cache=cache) as engine:
        first = engine.run(x)[0]
    assert [e.kind for e in cache.entries()].count("tensorrt") == 1

    def no_build(*args, **kwargs):
        raise AssertionError("the plan was rebuilt although it is in the cache")

    monkeypatch.setattr(trt_build, "build_plan", no_build)
    with backend.engine(source, GPU0, {"max_batch": 4}, cache=EngineCache(cache.root)) as engine:
        np.testing.assert_array_equal(engine.run(x)[0], first)
    assert [e.kind for e in cache.entries()].count("tensorrt") == 1
