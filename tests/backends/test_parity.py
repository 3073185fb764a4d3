"""Every available CPU backend against Paddle Inference (the fp32 reference) on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest

from hpi.backends import available_backends, get_backend, list_backends
from hpi.cache import EngineCache
from hpi.device import Device
from hpi.errors import BackendUnavailableError, InvalidConfigError, InvalidInputError
from hpi.preprocess.reference import preprocess_batch
from hpi.source import ModelSource

CPU = Device("cpu")
CPU_BACKENDS = ["paddle", "onnxruntime", "openvino"]
# fp32 backends compute the same network with different kernels: differences are summation-order rounding.
FP32_MAX_ABS = 1e-4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return EngineCache(tmp_path_factory.mktemp("cache"))


def test_registry_lists_all_four():
    assert set(list_backends()) == {"paddle", "onnxruntime", "openvino", "tensorrt"}


def test_cpu_backends_are_available_here():
    reasons = available_backends(CPU)
    for name in CPU_BACKENDS:
        assert reasons[name] is None, f"{name}: {reasons[name]}"
    assert reasons["tensorrt"]  # no GPU backend runs on a CPU device, and it says why


def _run_all(source, batch, cache):
    outputs = {}
    for name in CPU_BACKENDS:
        if source.format == "onnx" and name == "paddle":
            continue
        with get_backend(name).engine(source, CPU, {}, cache) as engine:
            outputs[name] = engine.run(batch)[0]
    return outputs


@pytest.mark.parametrize("fixture", ["toy_dir", "ocr_cls_dir"])
def test_fp32_backends_match_paddle(request, fixture, photos, cache):
    source = ModelSource.from_path(request.getfixturevalue(fixture))
    rgb = [p[:, :, ::-1] for p in photos.values()]
    batch = preprocess_batch(source.spec.preprocess, rgb)
    outputs = _run_all(source, batch, cache)
    reference = outputs["paddle"]
    for name, out in outputs.items():
        assert out.shape == reference.shape
        diff = float(np.abs(out - reference).max())
        assert diff < FP32_MAX_ABS, f"{name}: max abs diff {diff:.2e} vs paddle"
        assert (out.argmax(1) == reference.argmax(1)).all(), f"{name}: top-1 differs from paddle"


def test_onnx_model_runs_on_onnx_backends(orientation_dir, photos, cache):
    source = ModelSource.from_path(orientation_dir)
    batch = preprocess_batch(source.spec.preprocess, [p[:, :, ::-1] for p in photos.values()])
    outputs = _run_all(source, batch, cache)
    assert set(outputs) == {"onnxruntime", "openvino"}
    assert float(np.abs(outputs["openvino"] - outputs["onnxruntime"]).max()) < FP32_MAX_ABS


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_dynamic_batch(toy_dir, cache, batch_size):
    source = ModelSource.from_path(toy_dir)
    x = np.random.default_rng(0).normal(size=(batch_size, 3, 64, 64)).astype(np.float32)
    for name, out in _run_all(source, x, cache).items():
        assert out.shape == (batch_size, 10), name
        np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5, err_msg=name)  # softmax rows


def test_openvino_bf16_is_explicit(toy_dir, cache):
    """bf16 runs only when asked; the default compiles f32 even on AMX CPUs where OpenVINO would pick bf16."""
    source = ModelSource.from_path(toy_dir)
    backend = get_backend("openvino")
    with backend.engine(source, CPU, {}, cache) as engine:
        assert str(engine._compiled.get_property("INFERENCE_PRECISION_HINT")).endswith("'float32'>")
    if "bf16" in backend.precisions(CPU):
        with backend.engine(source, CPU, {"precision": "bf16"}, cache) as engine:
            assert "bfloat16" in str(engine._compiled.get_property("INFERENCE_PRECISION_HINT"))


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_wrong_input_is_rejected_with_its_name(toy_dir, cache, name):
    source = ModelSource.from_path(toy_dir)
    with get_backend(name).engine(source, CPU, {}, cache) as engine:
        with pytest.raises(InvalidInputError, match=r"input 'x': expected shape \['N', 3, 64, 64\]"):
            engine.run(np.zeros((1, 3, 32, 32), np.float32))
        with pytest.raises(InvalidInputError, match="expected dtype float32, got float64"):
            engine.run(np.zeros((1, 3, 64, 64), np.float64))
        with pytest.raises(InvalidInputError, match="do not match"):
            engine.run({"y": np.zeros((1, 3, 64, 64), np.float32)})


def test_run_before_load_is_an_error(toy_dir, cache):
    from hpi.errors import InferenceError

    engine = get_backend("onnxruntime").engine(ModelSource.from_path(toy_dir), CPU, {}, cache)
    with pytest.raises(InferenceError, match="call load"):
        engine.run(np.zeros((1, 3, 64, 64), np.float32))


def test_config_errors_name_the_key(toy_dir, cache):
    source = ModelSource.from_path(toy_dir)
    with pytest.raises(InvalidConfigError, match="unknown key 'thread'"):
        get_backend("openvino").engine(source, CPU, {"thread": 2}, cache)
    with pytest.raises(InvalidConfigError, match="cannot run fp16 on cpu"):
        get_backend("paddle").engine(source, CPU, {"precision": "fp16", "use_tensorrt": True}, cache)


def test_paddle_cannot_load_onnx(orientation_dir, cache):
    with pytest.raises(InvalidConfigError, match="cannot load onnx models"):
        get_backend("paddle").engine(ModelSource.from_path(orientation_dir), CPU, {}, cache)


def test_gpu_device_unavailable_says_why(toy_dir, cache):
    source = ModelSource.from_path(toy_dir)
    with pytest.raises(BackendUnavailableError, match="not available on gpu:0"):
        get_backend("onnxruntime").engine(source, Device("gpu", 0), {}, cache)
    with pytest.raises(BackendUnavailableError, match="openvino does not run on gpu"):
        get_backend("openvino").engine(source, Device("gpu", 0), {}, cache)


def test_paddlex_alias_cpu_num_threads(toy_dir, cache):
    cfg = get_backend("onnxruntime").make_config({"cpu_num_threads": 1})
    assert cfg.threads == 1
