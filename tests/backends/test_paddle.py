"""Tests for hpi/backends/paddle.py's TensorRT routes with a fake GPU Paddle (the CPU wheel here has no TensorRT).

A PIR model (``inference.json``) is converted ahead of time and loaded with a plain GPU config; an old-format model
(``inference.pdmodel``) uses ``enable_tensorrt_engine`` with its optimisation cache in a sealed entry built by a
warm-up; a Paddle without TensorRT is refused before anything is built.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from hpi.artefacts.artefact import Artefact
from hpi.artefacts.paddle_trt import tensorrt_reason
from hpi.backends import get_backend
from hpi.backends import paddle as paddle_backend
from hpi.backends.paddle import PaddleBackend, PaddleConfig, PaddleEngine
from hpi.cache import EngineCache
from hpi.device import Device
from hpi.errors import BackendUnavailableError
from hpi.gpu import gpu_facts
from hpi.source import ModelSource
from tests.gpu_fakes import use_simulated_cuda
from tests.tiny_onnx import INFERENCE_YML

GPU0 = Device("gpu", 0)


def _paddle_source(directory: Path, program: str) -> ModelSource:
    directory.mkdir(parents=True)
    (directory / program).write_bytes(b"program")
    (directory / "inference.pdiparams").write_bytes(b"params")
    (directory / "inference.yml").write_text(INFERENCE_YML, encoding="utf-8")
    return ModelSource.from_path(directory)


def _fake_paddle(configs: list, trt_version=(10, 13, 0)) -> types.ModuleType:  # noqa: ANN001
    pi = types.ModuleType("paddle.inference")

    class Config:
        def __init__(self, model, params):  # noqa: ANN001
            self.model, self.params, self.optim_dir, self.calls = str(model), str(params), None, []
            configs.append(self)

        def set_optim_cache_dir(self, directory):  # noqa: ANN001
            self.optim_dir = directory

        def __getattr__(self, name):  # noqa: ANN001, ANN204 - every other Config call is recorded
            return lambda *args, **kwargs: self.calls.append(name)

        def names(self) -> list[str]:
            return self.calls

    class Predictor:
        def __init__(self, config: Config) -> None:
            if config.optim_dir is not None:  # Paddle-TensorRT serialises its engines here
                Path(config.optim_dir, "trt_engine.bin").write_bytes(b"engine")
            self.runs = 0

        def get_input_names(self):  # noqa: ANN202
            return ["x"]

        def get_output_names(self):  # noqa: ANN202
            return ["y"]

        def get_input_handle(self, name):  # noqa: ANN001, ANN202
            return types.SimpleNamespace(reshape=lambda shape: None, copy_from_cpu=lambda array: None)

        def run(self) -> None:
            self.runs += 1

    pi.Config, pi.create_predictor = Config, Predictor
    pi.PrecisionType = types.SimpleNamespace(Float32=0, Half=1)
    pi.get_trt_compile_version = pi.get_trt_runtime_version = lambda: trt_version
    paddle = types.ModuleType("paddle")
    paddle.inference, paddle.version = pi, types.SimpleNamespace(full_version="3.3.1")
    return paddle


@pytest.fixture
def fake_gpu_paddle(monkeypatch):
    use_simulated_cuda(monkeypatch)
    gpu_facts.cache_clear()
    configs: list = []
    paddle = _fake_paddle(configs)
    monkeypatch.setitem(sys.modules, "paddle", paddle)
    monkeypatch.setitem(sys.modules, "paddle.inference", paddle.inference)
    yield configs
    gpu_facts.cache_clear()


def _engine(source: ModelSource, cache: EngineCache, **config) -> PaddleEngine:
    return PaddleEngine(get_backend("paddle"), source, GPU0, PaddleConfig(**config), cache)


def test_a_pir_model_is_converted_ahead_of_time_and_loaded_with_a_plain_gpu_config(tmp_path, monkeypatch,
                                                                                    fake_gpu_paddle):
    source = _paddle_source(tmp_path / "m", "inference.json")
    converted = tmp_path / "converted" / "inference.json"
    calls = []

    def convert(src, cache, parts, precision, max_batch, min_subgraph):  # noqa: ANN001, ANN202
        calls.append((parts, precision, max_batch))
        return Artefact("paddle-trt", "k", converted, parts)

    monkeypatch.setattr(paddle_backend, "convert_pir", convert)
    engine = _engine(source, EngineCache(tmp_path / "cache"), use_tensorrt=True, precision="fp16").load()
    (parts, precision, max_batch), = calls
    assert (precision, max_batch) == ("fp16", 8)
    assert parts["config"] == engine.config.to_dict() and parts["trt"] == "10.13.0"  # keyed on the whole config
    serving = fake_gpu_paddle[-1]
    assert (serving.model, serving.params) == (str(converted), str(converted.with_suffix(".pdiparams")))
    assert "enable_use_gpu" in serving.names() and "enable_new_ir" in serving.names()
    assert "enable_tensorrt_engine" not in serving.names() and serving.optim_dir is None


def test_an_old_format_model_gets_a_sealed_optimisation_cache_built_by_a_warm_up(tmp_path, fake_gpu_paddle):
    source = _paddle_source(tmp_path / "m", "inference.pdmodel")
    cache = EngineCache(tmp_path / "cache")
    engine = _engine(source, cache, use_tensorrt=True).load()
    with_trt = [c for c in fake_gpu_paddle if "enable_tensorrt_engine" in c.names()]
    assert len(with_trt) == 2  # the warm-up, then the serving predictor
    warm, serving = with_trt
    (entry,) = [e.path for e in cache.entries() if e.kind == "paddle-optim"]
    assert (entry / "trt_engine.bin").read_bytes() == b"engine"
    assert Path(warm.optim_dir) != entry and Path(serving.optim_dir) == engine._scratch.path
    probes = [c for c in fake_gpu_paddle if "disable_gpu" in c.names()]
    assert probes and all("disable_onednn" in c.names() for c in probes)  # the name probe runs without oneDNN
    engine.close()
    assert not Path(serving.optim_dir).exists()


def test_the_optimisation_cache_key_covers_the_whole_config(tmp_path, fake_gpu_paddle):
    source = _paddle_source(tmp_path / "m", "inference.pdmodel")
    cache = EngineCache(tmp_path / "cache")
    for config in ({}, {"trt_min_subgraph_size": 5}, {"gpu_memory_mb": 1000}):
        _engine(source, cache, use_tensorrt=True, **config).load().close()
    assert len([e for e in cache.entries() if e.kind == "paddle-optim"]) == 3


def test_paddle_without_tensorrt_is_refused_before_anything_is_built(tmp_path, monkeypatch, fake_gpu_paddle):
    source = _paddle_source(tmp_path / "m", "inference.json")
    without = _fake_paddle([], trt_version=(0, 0, 0))
    monkeypatch.setitem(sys.modules, "paddle", without)
    monkeypatch.setitem(sys.modules, "paddle.inference", without.inference)
    monkeypatch.setattr(PaddleBackend, "unavailable_reason", lambda self, device: None)
    backend = get_backend("paddle")
    with pytest.raises(BackendUnavailableError, match="cannot use TensorRT on gpu:0: Paddle built without TensorRT"):
        backend.engine(source, GPU0, {"use_tensorrt": True}, cache=EngineCache(tmp_path / "cache"))
    assert not backend.engine(source, GPU0, {}, cache=EngineCache(tmp_path / "cache")).loaded  # plain CUDA is fine


def test_the_cpu_wheel_reports_paddle_built_without_tensorrt():
    import paddle.inference as pi

    assert tensorrt_reason(pi) == "Paddle built without TensorRT (get_trt_compile_version() is 0.0.0)"


def test_bf16_is_offered_only_where_the_cpu_runs_it(cpu_without_bf16, toy_dir, tmp_path):
    """On an AVX2-only CPU Paddle's oneDNN ran fp32 under a bf16 label: bf16 is absent, with the reason, and an
    explicit bf16 engine is an error that says why."""
    from hpi.errors import InvalidConfigError

    backend = get_backend("paddle")
    cpu = Device("cpu")
    assert backend.precisions(cpu) == ("fp32",)
    assert backend.absent_precisions(cpu)["bf16"].startswith("this CPU has neither AMX-BF16 nor AVX512-BF16")
    with pytest.raises(InvalidConfigError, match=r"cannot run bf16 on cpu: this CPU has neither AMX-BF16"):
        backend.engine(ModelSource.from_path(toy_dir), cpu, {"precision": "bf16"}, EngineCache(tmp_path))


def test_bf16_is_offered_on_a_cpu_with_it(cpu_with_bf16):
    assert get_backend("paddle").precisions(Device("cpu")) == ("fp32", "bf16")
    assert set(get_backend("paddle").absent_precisions(Device("cpu"))) == {"int8"}  # declined: PaddleSlim only


def test_onednn_off_is_said_to_paddle(toy_dir, tmp_path):
    """Paddle 3 enables oneDNN by default: enable_onednn=False must switch it off (the fp32 gate's reordering
    variant relies on it computing with other kernels)."""
    import paddle.inference as pi

    source = ModelSource.from_path(toy_dir)
    for enabled in (True, False):
        engine = get_backend("paddle").engine(source, Device("cpu"), {"enable_onednn": enabled, "threads": 1},
                                              EngineCache(tmp_path))
        assert engine._config(pi, source.model_file, source.params_file, None).onednn_enabled() is enabled
