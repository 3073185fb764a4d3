"""hpi/aot.py: engines built ahead of time into the cache, with or without the measured selection."""

from __future__ import annotations

import pytest

from hpi.aot import EngineBuild, prepare_engines, related_entries
from hpi.cache import EngineCache
from hpi.config import HpiConfig
from hpi.device import Device
from hpi.errors import InvalidConfigError
from hpi.source import ModelSource


def test_named_backends_are_built_without_measuring(toy_dir, tmp_path):
    source, cache = ModelSource.from_path(toy_dir), EngineCache(tmp_path)
    lines = []
    # fp32 only: on a CPU with VNNI, onnxruntime[int8] would be built too (tests/artefacts/test_quantize.py)
    prepared = prepare_engines(source, Device("cpu"), HpiConfig(threads=1, allow_reduced_precision=False), cache,
                               backends=["onnxruntime", "tensorrt"], progress=lines.append)
    assert prepared.record is None
    assert prepared.builds[0] == EngineBuild("onnxruntime[fp32]", "built")
    assert [(b.label, b.status) for b in prepared.builds[1:]] == [("tensorrt", "unavailable")]
    assert prepared.builds[1].reason  # why it cannot run here
    assert lines == ["building onnxruntime[fp32]"]
    assert {e.kind for e in prepared.entries} == {"onnx"}  # ONNX Runtime runs the exported model as it is
    assert list(prepared.entries) == related_entries(cache, source.content_hash)
    with pytest.raises(InvalidConfigError, match="unknown backend 'tflite'"):
        prepare_engines(source, Device("cpu"), HpiConfig(), cache, backends=["tflite"])


def test_related_entries_follow_what_was_built_from_what(tmp_path):
    cache = EngineCache(tmp_path)
    onnx = cache.get_or_build("onnx", {"model": "m1"}, lambda d: (d / "model.onnx").write_bytes(b"x"))
    cache.get_or_build("openvino", {"onnx": onnx.name}, lambda d: (d / "model.xml").write_bytes(b"y"))
    cache.get_or_build("onnx", {"model": "m2"}, lambda d: (d / "model.onnx").write_bytes(b"z"))
    assert sorted(e.kind for e in related_entries(cache, "m1")) == ["onnx", "openvino"]
    assert [e.kind for e in related_entries(cache, "m2")] == ["onnx"]
