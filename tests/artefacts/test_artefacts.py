"""Tests for hpi/artefacts/onnx.py and hpi/artefacts/openvino.py: typed artefacts and the keys later builds use."""

from __future__ import annotations

from hpi.artefacts import onnx as onnx_build
from hpi.artefacts import openvino as ov_build
from hpi.artefacts.artefact import SOURCE_KIND
from hpi.cache import EngineCache, cache_key
from tests.tiny_onnx import tiny_source


def test_an_onnx_source_is_its_own_artefact_and_folding_is_a_cached_one(tmp_path):
    source = tiny_source(tmp_path / "m")
    cache = EngineCache(tmp_path / "cache")
    plain = onnx_build.export_onnx(source, cache)
    assert (plain.kind, plain.key, plain.path) == (SOURCE_KIND, source.content_hash, source.model_file)
    folded = onnx_build.fold_onnx(source, cache)
    assert folded.kind == "onnx-folded" and folded.parts["onnx"] == plain.key
    assert folded.key == cache_key(folded.parts) and folded.path.is_file() and folded.path.parent.name == folded.key
    assert onnx_build.model_onnx(source, cache, fold_preprocess=True) == folded
    assert onnx_build.folded_onnx_path(source, cache) == folded.path
    assert onnx_build.onnx_path(source, cache) == plain.path


def test_openvino_ir_keys_on_the_onnx_artefact(tmp_path):
    source = tiny_source(tmp_path / "m")
    cache = EngineCache(tmp_path / "cache")
    ir = ov_build.convert_ir(source, cache)
    assert ir.kind == "openvino" and ir.parts["onnx"] == source.content_hash
    assert ir.path.name == "model.xml" and ir.path.is_file() and ir.key == ir.path.parent.name
    assert ov_build.openvino_ir_path(source, cache) == ir.path
