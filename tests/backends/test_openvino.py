"""Tests for hpi/backends/openvino.py: compiled models are engine-cache entries (no OpenVINO CACHE_DIR writes)."""

from __future__ import annotations

import numpy as np
import openvino as ov

from hpi.artefacts.openvino import COMPILED_KIND
from hpi.backends import get_backend
from hpi.cache import EngineCache
from hpi.device import Device
from tests.tiny_onnx import random_batch, tiny_source

CPU = Device("cpu")


def test_each_compiled_model_is_its_own_entry_and_is_imported_next_time(tmp_path, monkeypatch):
    source = tiny_source(tmp_path / "m")
    cache = EngineCache(tmp_path / "cache")
    config = {"threads": 1, "static_batch": True}
    with get_backend("openvino").engine(source, CPU, config, cache=cache) as engine:
        first = [engine.run(random_batch(n))[0] for n in (1, 2)]
    compiled = [e for e in cache.entries() if e.kind == COMPILED_KIND]
    assert sorted(str(e.parts["batch"]) for e in compiled) == ["1", "2", "None"]  # dynamic + one per batch size
    assert not [p for p in cache.root.iterdir() if p.name == "openvino-blobs"]

    calls = []
    real = ov.Core.compile_model
    monkeypatch.setattr(ov.Core, "compile_model", lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    with get_backend("openvino").engine(source, CPU, config, cache=EngineCache(cache.root)) as engine:
        again = [engine.run(random_batch(n))[0] for n in (1, 2)]
    assert calls == []  # every compiled model came from its blob
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert len([e for e in cache.entries() if e.kind == COMPILED_KIND]) == 3


def test_compile_cache_off_writes_no_compiled_entries(tmp_path):
    source = tiny_source(tmp_path / "m")
    cache = EngineCache(tmp_path / "cache")
    with get_backend("openvino").engine(source, CPU, {"threads": 1, "compile_cache": False}, cache=cache) as engine:
        engine.run(random_batch(1))
    assert not [e for e in cache.entries() if e.kind == COMPILED_KIND]


def test_bf16_is_offered_only_where_the_cpu_runs_it(cpu_without_bf16, tmp_path):
    import pytest

    from hpi.errors import InvalidConfigError

    backend = get_backend("openvino")
    assert backend.precisions(CPU) == ("fp32", "int8")  # AVX2 runs int8 (with 7-bit weights), not bf16
    absent = backend.absent_precisions(CPU)
    assert set(absent) == {"bf16"} and absent["bf16"].startswith("this CPU has neither AMX-BF16 nor AVX512-BF16")
    with pytest.raises(InvalidConfigError, match="neither AMX-BF16 nor AVX512-BF16"):
        backend.engine(tiny_source(tmp_path / "m"), CPU, {"precision": "bf16"}, EngineCache(tmp_path / "c"))


def test_bf16_is_offered_on_a_cpu_with_it(cpu_with_bf16):
    assert get_backend("openvino").precisions(CPU)[:2] == ("fp32", "bf16")  # and int8 where the CPU has VNNI


def test_streams_split_a_batch_and_give_the_same_outputs(tmp_path, monkeypatch):
    """With num_streams 2 a batch runs as two parts at once (uneven for an odd batch), with one stream's outputs."""
    source = tiny_source(tmp_path / "m")
    cache = EngineCache(tmp_path / "cache")
    batches = {n: random_batch(n) for n in (1, 5, 8)}
    with get_backend("openvino").engine(source, CPU, {"threads": 2}, cache=cache) as engine:
        one = {n: engine.run(x)[0] for n, x in batches.items()}
    started = []
    real = ov.InferRequest.start_async
    monkeypatch.setattr(ov.InferRequest, "start_async",
                        lambda self, inputs, *a, **k: started.append(next(iter(inputs.values())).shape[0])
                        or real(self, inputs, *a, **k))
    with get_backend("openvino").engine(source, CPU, {"threads": 2, "num_streams": 2}, cache=cache) as engine:
        assert engine._compiled.get_property("NUM_STREAMS") == 2
        for n, x in batches.items():
            np.testing.assert_allclose(engine.run(x)[0], one[n], rtol=1e-5, atol=1e-6)
    assert started == [2, 3, 4, 4]  # batch 1 runs whole; 5 as 2 + 3; 8 as 4 + 4
