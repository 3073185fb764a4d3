"""hpi/selection/candidates.py: which candidates exist here, their thread counts, and the fp32 reference."""

from __future__ import annotations

from hpi.config import HpiConfig
from hpi.device import Device, resolve_threads
from hpi.model import ModelSource
from hpi.selection.candidates import Candidate, candidates, config_values, reference_candidate

CPU = Device("cpu")


def test_candidates_on_this_cpu(toy_dir):
    cands, skipped = candidates(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1))
    labels = {c.label for c in cands}
    assert {"paddle[fp32]", "onnxruntime[fp32]", "openvino[fp32]"} <= labels
    assert "tensorrt" in skipped
    assert all(c.config.get("threads") == 1 for c in cands)
    fp32_only, _ = candidates(ModelSource.from_path(toy_dir), CPU, HpiConfig(allow_reduced_precision=False))
    assert {c.precision for c in fp32_only} == {"fp32"}


def test_onnx_model_has_no_paddle_candidate(orientation_dir):
    cands, skipped = candidates(ModelSource.from_path(orientation_dir), CPU, HpiConfig())
    assert "paddle" not in {c.backend for c in cands} and "cannot load onnx" in skipped["paddle"]
    ref = reference_candidate(ModelSource.from_path(orientation_dir), CPU, HpiConfig())
    assert ref.backend == "onnxruntime"


def test_threads_are_filled_in_one_place():
    assert config_values("onnxruntime", CPU, HpiConfig(threads=1)) == {"threads": 1}
    assert config_values("paddle", CPU, HpiConfig()) == {"threads": resolve_threads(None)}
    assert config_values("paddle", CPU, HpiConfig(threads=1), {"cpu_num_threads": 2}) == {"cpu_num_threads": 2}
    assert config_values("onnxruntime", Device("gpu", 0), HpiConfig(threads=1)) == {}  # CPU threads only
    assert config_values("tensorrt", CPU, HpiConfig(threads=1)) == {}  # no thread setting to fill


def test_candidate_label():
    assert Candidate("onnxruntime", "fp16", {"use_tensorrt": True}).label == "onnxruntime+trt[fp16]"
