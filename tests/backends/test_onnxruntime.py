"""Tests for hpi/backends/onnxruntime.py's GPU paths with a fake onnxruntime-gpu (no GPU here).

They check what hpi does around the session: TensorRT's libraries are loaded first, sessions are created with
fallback disabled, a provider that did not start is an error, and the TensorRT provider's engine cache is a sealed
entry built by a warm-up, keyed on the ONNX file it is fed. The CPU path runs for real in test_parity.py.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from hpi.artefacts.onnx import export_onnx, fold_onnx
from hpi.backends import get_backend
from hpi.backends import onnxruntime as ort_backend
from hpi.backends.onnxruntime import OrtConfig, OrtEngine, ort_trt_cache_parts
from hpi.cache import EngineCache, cache_key
from hpi.device import Device
from hpi.errors import BackendUnavailableError
from hpi.gpu import gpu_facts
from hpi.trtlibs import TensorRtLibs
from tests.gpu_fakes import use_simulated_cuda
from tests.tiny_onnx import tiny_source

GPU0 = Device("gpu", 0)
TRT = "TensorrtExecutionProvider"
CU13 = TensorRtLibs("tensorrt-cu13-libs", "10.13.0.35", 10, 13, Path("/x"))


def _fake_ort(events: list, active: list[str] | None = None) -> types.ModuleType:
    """An onnxruntime-gpu stand-in whose TensorRT provider writes an engine into its cache path."""
    ort = types.ModuleType("onnxruntime")
    ort.__version__ = "1.31.0"

    class SessionOptions:
        def add_session_config_entry(self, key, value):  # noqa: ANN001
            pass

    class InferenceSession:
        def __init__(self, path, sess_options=None, providers=None, **kwargs):  # noqa: ANN001
            events.append(("session", path, providers, kwargs))
            self.providers = providers
            for provider in providers:
                if isinstance(provider, tuple) and provider[0] == TRT:
                    Path(provider[1]["trt_engine_cache_path"], "engine.trt").write_bytes(b"engine")

        def get_providers(self):  # noqa: ANN202
            return active or [p[0] if isinstance(p, tuple) else p for p in self.providers]

        def get_inputs(self):  # noqa: ANN202
            return [types.SimpleNamespace(name="x", shape=["N", 3, 16, 16], type="tensor(float)")]

        def get_outputs(self):  # noqa: ANN202
            return [types.SimpleNamespace(name="logits")]

        def run(self, names, feed):  # noqa: ANN001, ANN202
            events.append(("run", {k: v.shape for k, v in feed.items()}))

    ort.SessionOptions, ort.InferenceSession = SessionOptions, InferenceSession
    ort.GraphOptimizationLevel = types.SimpleNamespace(ORT_DISABLE_ALL=0, ORT_ENABLE_BASIC=1, ORT_ENABLE_EXTENDED=2,
                                                       ORT_ENABLE_ALL=99)
    ort.ExecutionMode = types.SimpleNamespace(ORT_SEQUENTIAL=0)
    ort.preload_dlls = lambda: events.append(("preload_dlls",))
    ort.get_available_providers = lambda: [TRT, "CUDAExecutionProvider", "CPUExecutionProvider"]
    return ort


@pytest.fixture
def gpu_setup(tmp_path, monkeypatch):
    use_simulated_cuda(monkeypatch)
    gpu_facts.cache_clear()
    events: list = []
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort(events))
    monkeypatch.setattr(ort_backend, "preload_tensorrt", lambda major: events.append(("preload_tensorrt", major)) or CU13)
    yield tiny_source(tmp_path / "m"), EngineCache(tmp_path / "cache"), events
    gpu_facts.cache_clear()


def _engine(source, cache, **config) -> OrtEngine:  # noqa: ANN001
    return OrtEngine(get_backend("onnxruntime"), source, GPU0, OrtConfig(**config), cache)


def test_tensorrt_provider_cache_is_a_sealed_entry_built_by_a_warm_up(gpu_setup):
    source, cache, events = gpu_setup
    engine = _engine(source, cache, use_tensorrt=True, precision="fp16").load()
    assert [e[0] for e in events] == ["preload_dlls", "preload_tensorrt", "session", "run", "session"]
    assert events[1] == ("preload_tensorrt", 10)  # ORT's provider links libnvinfer.so.10
    warm, serving = events[2], events[4]
    assert warm[3] == serving[3] == {"enable_fallback": 0}
    warm_dir = Path(warm[2][0][1]["trt_engine_cache_path"])
    serving_dir = Path(serving[2][0][1]["trt_engine_cache_path"])
    entry = cache.lookup("ort-trt", _parts(source, cache, engine))
    assert entry is not None and (entry / "engine.trt").read_bytes() == b"engine"
    assert warm_dir != entry and serving_dir != entry and not serving_dir.is_relative_to(entry)
    assert serving[2][0][1]["trt_fp16_enable"] is True
    assert serving[2][0][1]["trt_profile_max_shapes"] == "x:8x3x16x16"
    # The serving session wrote its engine into the private copy; the sealed entry still checks out.
    (serving_dir / "engine.trt").write_bytes(b"an engine for a shape outside the profile")
    assert cache.lookup("ort-trt", _parts(source, cache, engine)) == entry
    assert (entry / "engine.trt").read_bytes() == b"engine"
    engine.close()
    assert not serving_dir.exists()
    again = _engine(source, cache, use_tensorrt=True, precision="fp16").load()
    assert [e[0] for e in events[5:]].count("run") == 0  # the entry exists: no second warm-up
    again.close()


def _sig() -> str:
    from hpi.device import device_signature

    return device_signature(GPU0)


def _parts(source, cache, engine) -> dict:  # noqa: ANN001
    return ort_trt_cache_parts(export_onnx(source, cache), engine.config, _sig(), CU13, "1.31.0")


def test_missing_tensorrt_libraries_fail_before_any_session(gpu_setup, monkeypatch):
    source, cache, events = gpu_setup

    def missing(major):  # noqa: ANN001, ANN202
        raise BackendUnavailableError("TensorRT libraries (libnvinfer.so.10) were not found")

    monkeypatch.setattr(ort_backend, "preload_tensorrt", missing)
    with pytest.raises(BackendUnavailableError, match=r"libnvinfer.so.10\) were not found"):
        _engine(source, cache, use_tensorrt=True).load()
    assert [e[0] for e in events] == ["preload_dlls"]


def test_a_tensorrt_provider_that_did_not_start_is_an_error(gpu_setup, monkeypatch):
    source, cache, events = gpu_setup
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort(events, active=["CUDAExecutionProvider"]))
    with pytest.raises(BackendUnavailableError, match="could not start the TensorRT execution provider.*10.x"):
        _engine(source, cache, use_tensorrt=True).load()


def test_plain_cuda_needs_no_tensorrt(gpu_setup):
    source, cache, events = gpu_setup
    _engine(source, cache).load().close()
    assert [e[0] for e in events] == ["preload_dlls", "session"]
    assert events[1][2] == [("CUDAExecutionProvider", {"device_id": 0})] and events[1][3] == {"enable_fallback": 0}


def test_tensorrt_cache_key_covers_the_file_fed_and_the_session_settings(tmp_path):
    source = tiny_source(tmp_path / "m")
    cache = EngineCache(tmp_path / "cache")
    plain, folded = export_onnx(source, cache), fold_onnx(source, cache)
    cu12 = TensorRtLibs("tensorrt-cu12-libs", "10.13.0.35", 10, 12, Path("/x"))
    base = OrtConfig(use_tensorrt=True)

    def key(model=plain, config=base, libs=CU13) -> str:  # noqa: ANN001
        return cache_key(ort_trt_cache_parts(model, config, "gpusig", libs, "1.31.0"))

    variants = [key(model=folded), key(config=OrtConfig(use_tensorrt=True, fold_preprocess=True)),
                key(config=OrtConfig(use_tensorrt=True, graph_optimization="basic")),
                key(config=OrtConfig(use_tensorrt=True, precision="fp16")),
                key(config=OrtConfig(use_tensorrt=True, trt_max_batch_size=16)), key(libs=cu12)]
    assert len({key(), *variants}) == len(variants) + 1
