"""Tests for hpi/backends/tensorrt.py.

Most tests run anywhere: registration, the unavailable reasons, config validation, profiles and cache keys, the
fp16 ONNX conversion (checked with ONNX Runtime on CPU) and cuda-python error handling. The tests marked ``gpu``
and ``tensorrt`` build and run real plans; they are skipped, with the backend's own reason, where TensorRT or a
CUDA device is missing (select them on a GPU job with ``pytest -m tensorrt``).

Tolerances against ONNX Runtime on CPU (fp32), on logits of magnitude up to about 15:
fp32 plans (TF32 off) ``rtol=1e-3, atol=1e-4``; fp16 plans ``rtol=1e-2, atol=5e-2`` and the same top-1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpi.backends import tensorrt as trt_backend
from hpi.backends.base import get_backend, list_backends
from hpi.backends.tensorrt import InputProfile, TensorRtBackend, TensorRtConfig
from hpi.cache import EngineCache, cache_key
from hpi.device import Device, cuda_device_count
from hpi.errors import (
    BackendUnavailableError,
    ExportError,
    InferenceError,
    InvalidConfigError,
    InvalidInputError,
)
from hpi.model import ModelSource

GPU0 = Device("gpu", 0)
TRT_REASON = get_backend("tensorrt").unavailable_reason(GPU0)
requires_trt_gpu = pytest.mark.skipif(TRT_REASON is not None, reason=f"tensorrt on gpu:0: {TRT_REASON}")

FP32_TOL = {"rtol": 1e-3, "atol": 1e-4}
FP16_TOL = {"rtol": 1e-2, "atol": 5e-2}

_INFERENCE_YML = """\
Global:
  model_name: TinyNet
PreProcess:
  transform_ops:
  - ResizeImage: {resize_short: 16}
  - CropImage: {size: 16}
  - NormalizeImage: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], scale: 1.0/255.0, order: ''}
  - ToCHWImage: null
PostProcess:
  Topk: {topk: 1, label_list: [a, b, c, d, e]}
"""


def _tiny_onnx(path: Path, *, batch: int | str = "N", height: int | str = 16, width: int | str = 16) -> Path:
    """Conv-ReLU-GAP-Gemm classifier with seeded weights whose logits spread over several units."""
    onnx = pytest.importorskip("onnx")
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
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _tiny_source(directory: Path, **dims: int | str) -> ModelSource:
    _tiny_onnx(directory / "model.onnx", **dims)
    (directory / "inference.yml").write_text(_INFERENCE_YML, encoding="utf-8")
    return ModelSource.from_path(directory)


def _ort_reference(onnx_file: Path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _batch(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


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
    real = trt_backend._module_available
    monkeypatch.setattr(trt_backend, "_module_available", lambda name: name not in missing and (
        name in {"tensorrt", "tensorrt_bindings", "cuda.bindings", "cuda.cudart", "onnx"} or real(name)))


def test_reason_when_tensorrt_is_missing(monkeypatch):
    _pretend_installed(monkeypatch, "tensorrt", "tensorrt_bindings")
    assert get_backend("tensorrt").unavailable_reason(GPU0) == (
        "tensorrt is not installed (pip install tensorrt-cu12-bindings tensorrt-cu12-libs)"
    )


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
    source = _tiny_source(tmp_path / "m")
    with pytest.raises(BackendUnavailableError, match="backend 'tensorrt' is not available on gpu:0") as info:
        get_backend("tensorrt").engine(source, GPU0, cache=EngineCache(tmp_path / "cache"))
    assert TRT_REASON in str(info.value)


@pytest.mark.skipif(TRT_REASON is None, reason="tensorrt can run here")
def test_build_plan_without_a_usable_tensorrt_raises_unavailable(tmp_path):
    onnx_file = _tiny_onnx(tmp_path / "model.onnx")
    with pytest.raises(BackendUnavailableError):
        trt_backend.build_plan(onnx_file)


def test_fp16_engine_without_the_onnx_converter_is_refused_at_selection(monkeypatch, tmp_path):
    source = _tiny_source(tmp_path / "m")
    monkeypatch.setattr(TensorRtBackend, "_device_reason", lambda self, device: None)
    real = trt_backend._module_available
    monkeypatch.setattr(trt_backend, "_module_available", lambda name: name != "onnxconverter_common" and real(name))
    backend = get_backend("tensorrt")
    with pytest.raises(BackendUnavailableError, match="pip install onnxconverter-common"):
        backend.engine(source, GPU0, {"precision": "fp16"}, cache=EngineCache(tmp_path / "cache"))
    engine = backend.engine(source, GPU0, {"precision": "fp32"}, cache=EngineCache(tmp_path / "cache"))
    assert not engine.loaded  # constructing an engine builds nothing


# --------------------------------------------------------------------------------------------- config


def test_config_defaults_and_aliases():
    cfg = TensorRtConfig()
    assert (cfg.precision, cfg.min_batch, cfg.opt_batch, cfg.max_batch) == ("fp32", 1, 1, 8)
    assert cfg.timing_cache is True and cfg.tf32 is False
    assert TensorRtConfig.from_dict({"max_batch_size": 16}).max_batch == 16
    assert get_backend("tensorrt").make_config({"precision": "fp16", "opt_batch": 4}).opt_batch == 4


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"precision": "bf16"}, "precision"),
        ({"precision": "int8"}, "precision"),
        ({"min_batch": 0}, "min_batch"),
        ({"max_batch": -1}, "max_batch"),
        ({"opt_batch": 2.5}, "opt_batch"),
        ({"min_batch": 4, "opt_batch": 2, "max_batch": 8}, "min_batch"),
        ({"min_batch": 1, "opt_batch": 8, "max_batch": 4}, "opt_batch"),
        ({"workspace_mb": 0}, "workspace_mb"),
        ({"optimization_level": 6}, "optimization_level"),
        ({"timing_cache": "yes"}, "timing_cache"),
        ({"precision": "fp16", "tf32": True}, "tf32"),
        ({"batch": 4}, "batch"),
    ],
)
def test_bad_config_raises_naming_the_key(values, key):
    with pytest.raises(InvalidConfigError, match=key):
        TensorRtConfig.from_dict(values)


# ---------------------------------------------------------------------------------- profiles and keys


def test_profile_takes_the_batch_range_from_the_config(tmp_path):
    onnx_file = _tiny_onnx(tmp_path / "model.onnx")
    (profile,) = trt_backend.input_profiles(onnx_file, TensorRtConfig(min_batch=1, opt_batch=4, max_batch=8))
    assert profile == InputProfile("x", (1, 3, 16, 16), (4, 3, 16, 16), (8, 3, 16, 16))
    assert profile.dynamic_batch


def test_fixed_batch_model_gets_a_fixed_profile(tmp_path):
    onnx_file = _tiny_onnx(tmp_path / "model.onnx", batch=1)
    (profile,) = trt_backend.input_profiles(onnx_file, TensorRtConfig(max_batch=8))
    assert profile.min_shape == profile.max_shape == (1, 3, 16, 16)
    assert not profile.dynamic_batch


def test_dynamic_spatial_dims_need_input_dims(tmp_path):
    onnx_file = _tiny_onnx(tmp_path / "model.onnx", height="H", width="W")
    with pytest.raises(ExportError, match="input 'x' has shape"):
        trt_backend.input_profiles(onnx_file, TensorRtConfig())
    (profile,) = trt_backend.input_profiles(onnx_file, TensorRtConfig(max_batch=2), {"x": [None, 3, 32, 24]})
    assert profile.max_shape == (2, 3, 32, 24)
    with pytest.raises(ExportError, match="'y'"):
        trt_backend.input_profiles(onnx_file, TensorRtConfig(), {"y": [None, 3, 32, 24]})
    with pytest.raises(ExportError, match="does not fit"):
        trt_backend.input_profiles(onnx_file, TensorRtConfig(), {"x": [None, 4, 32, 24]})


def test_spatial_dims_come_from_inference_yml_for_a_single_image_input(tmp_path):
    source = _tiny_source(tmp_path / "m", height="H", width="W")
    inputs = trt_backend.onnx_inputs(source.model_file)
    assert inputs == [("x", [None, 3, None, None])]
    assert trt_backend._spec_input_dims(source, inputs) == {"x": [None, 3, 16, 16]}
    static = _tiny_source(tmp_path / "s")
    assert trt_backend._spec_input_dims(static, trt_backend.onnx_inputs(static.model_file)) is None


def test_cache_key_changes_with_everything_that_changes_the_plan():
    profile = [InputProfile("x", (1, 3, 16, 16), (1, 3, 16, 16), (8, 3, 16, 16))]
    base = trt_backend.plan_cache_parts("onnxhash", "11.4.0.106", "gpusig", TensorRtConfig(), profile)
    assert "onnxhash" in base.values() and base["tensorrt"] == "11.4.0.106" and base["device"] == "gpusig"
    variants = [
        trt_backend.plan_cache_parts("other", "11.4.0.106", "gpusig", TensorRtConfig(), profile),
        trt_backend.plan_cache_parts("onnxhash", "10.16.1.11", "gpusig", TensorRtConfig(), profile),
        trt_backend.plan_cache_parts("onnxhash", "11.4.0.106", "othergpu", TensorRtConfig(), profile),
        trt_backend.plan_cache_parts("onnxhash", "11.4.0.106", "gpusig", TensorRtConfig(precision="fp16"), profile),
        trt_backend.plan_cache_parts("onnxhash", "11.4.0.106", "gpusig", TensorRtConfig(optimization_level=5), profile),
        trt_backend.plan_cache_parts("onnxhash", "11.4.0.106", "gpusig", TensorRtConfig(),
                                     [InputProfile("x", (1, 3, 16, 16), (4, 3, 16, 16), (8, 3, 16, 16))]),
    ]
    keys = {cache_key(base), *(cache_key(v) for v in variants)}
    assert len(keys) == len(variants) + 1
    same = trt_backend.plan_cache_parts("onnxhash", "11.4.0.106", "gpusig", TensorRtConfig(timing_cache=False),
                                        profile)
    assert cache_key(same) == cache_key(base)  # the timing cache speeds up builds; it does not change the plan


def test_timing_cache_lives_outside_the_listed_entries(tmp_path):
    cache = EngineCache(tmp_path)
    path = trt_backend.timing_cache_file(cache, "11.4.0.106", "gpusig")
    assert path.is_relative_to(tmp_path) and path.parts[-3].startswith(".")


# ------------------------------------------------------------------------------------ fp16 conversion


def test_fp16_copy_keeps_fp32_io_and_stays_close(tmp_path):
    pytest.importorskip("onnxconverter_common")
    onnx = pytest.importorskip("onnx")
    onnx_file = _tiny_onnx(tmp_path / "model.onnx")
    converted = trt_backend.convert_to_fp16(onnx.load(str(onnx_file)))
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [v.type.tensor_type.elem_type for v in converted.graph.input] == [float32]
    assert [v.type.tensor_type.elem_type for v in converted.graph.output] == [float32]
    assert {t.data_type for t in converted.graph.initializer} == {float16}
    onnx.checker.check_model(converted, full_check=True)
    fp16_file = tmp_path / "model16.onnx"
    onnx.save(converted, str(fp16_file))
    x = _batch(4)
    reference, halved = _ort_reference(onnx_file, x), _ort_reference(fp16_file, x)
    assert halved.dtype == np.float32
    np.testing.assert_allclose(halved, reference, **FP16_TOL)
    assert (halved.argmax(1) == reference.argmax(1)).all()


# --------------------------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not trt_backend.cuda_python_installed(), reason="cuda-python is not installed")
def test_cuda_call_unpacks_values_and_names_failures():
    cudart = trt_backend.import_cudart()
    assert isinstance(trt_backend.cuda_call(cudart, cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"), int)
    if cuda_device_count() == 0:  # without a driver every allocation fails: the message names the call and error
        with pytest.raises(InferenceError, match=r"cudaMalloc\(16\) failed: cudaError"):
            trt_backend.cuda_call(cudart, cudart.cudaMalloc(16), "cudaMalloc(16)")


# -------------------------------------------------------------------------------- real plans on a GPU


@pytest.fixture
def tiny(tmp_path):
    return _tiny_source(tmp_path / "tiny"), EngineCache(tmp_path / "cache")


@pytest.mark.gpu
@pytest.mark.tensorrt
@requires_trt_gpu
def test_build_plan_returns_a_plan_tensorrt_can_load(tmp_path):
    onnx_file = _tiny_onnx(tmp_path / "model.onnx")
    plan = trt_backend.build_plan(onnx_file, TensorRtConfig(max_batch=4))
    assert isinstance(plan, bytes) and len(plan) > 0
    trt = trt_backend.import_tensorrt()
    runtime = trt.Runtime(trt_backend._relay(trt).trt_logger)
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
            x = _batch(n, seed=n)
            (out,) = engine.run(x)
            assert out.shape == (n, 5) and out.dtype == np.float32
            np.testing.assert_allclose(out, _ort_reference(source.model_file, x), **FP32_TOL)


@pytest.mark.gpu
@pytest.mark.tensorrt
@requires_trt_gpu
def test_fp16_plan_matches_onnxruntime_cpu_within_fp16_tolerance(tiny):
    pytest.importorskip("onnxconverter_common")
    source, cache = tiny
    with get_backend("tensorrt").engine(source, GPU0, {"precision": "fp16", "max_batch": 4}, cache=cache) as engine:
        for n in (1, 4):
            x = _batch(n, seed=10 + n)
            (out,) = engine.run(x)
            reference = _ort_reference(source.model_file, x)
            assert out.dtype == np.float32
            np.testing.assert_allclose(out, reference, **FP16_TOL)
            assert (out.argmax(1) == reference.argmax(1)).all()


@pytest.mark.gpu
@pytest.mark.tensorrt
@requires_trt_gpu
def test_batches_outside_the_profile_are_refused_and_buffers_only_grow(tiny):
    source, cache = tiny
    with get_backend("tensorrt").engine(source, GPU0, {"min_batch": 1, "max_batch": 8}, cache=cache) as engine:
        engine.run(_batch(4))
        pointer = engine._buffers["x"].device_ptr
        engine.run(_batch(1))
        assert engine._buffers["x"].device_ptr == pointer  # a smaller batch reuses the buffers
        engine.run(_batch(8))
        assert engine._buffers["x"].nbytes >= _batch(8).nbytes
        with pytest.raises(InvalidInputError, match="outside this plan's profile 1..8"):
            engine.run(_batch(9))
    assert engine._buffers == {}  # closing freed them


@pytest.mark.gpu
@pytest.mark.tensorrt
@requires_trt_gpu
def test_second_load_uses_the_cached_plan(tiny, monkeypatch):
    source, cache = tiny
    backend = get_backend("tensorrt")
    x = _batch(2)
    with backend.engine(source, GPU0, {"max_batch": 4}, cache=cache) as engine:
        first = engine.run(x)[0]
    assert [e.kind for e in cache.entries()].count("tensorrt") == 1

    def no_build(*args, **kwargs):
        raise AssertionError("the plan was rebuilt although it is in the cache")

    monkeypatch.setattr(trt_backend, "build_plan", no_build)
    with backend.engine(source, GPU0, {"max_batch": 4}, cache=EngineCache(cache.root)) as engine:
        np.testing.assert_array_equal(engine.run(x)[0], first)
    assert [e.kind for e in cache.entries()].count("tensorrt") == 1
