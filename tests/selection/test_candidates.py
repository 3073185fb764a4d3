"""hpi/selection/candidates.py: which candidates exist here, their thread counts, and the fp32 reference."""

from __future__ import annotations

from hpi.config import HpiConfig
from hpi.device import Device, resolve_threads
from hpi.selection.candidates import Candidate, candidates, config_values, int8_overflow, reference_candidate
from hpi.source import ModelSource
from tests.conftest import fake_cpu_flags

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


def test_reduced_precision_the_cpu_lacks_is_absent_with_the_reason(toy_dir, cpu_without_bf16):
    cands, skipped = candidates(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1))
    assert {c.precision for c in cands} == {"fp32", "int8"}  # AVX2 runs int8 (7-bit weights), not bf16
    why = "this CPU has neither AMX-BF16 nor AVX512-BF16"
    assert skipped["paddle[bf16]"].startswith(why) and skipped["openvino[bf16]"].startswith(why)
    assert "onnxruntime[bf16]" not in skipped  # ONNX Runtime offers no bf16 on CPU anywhere
    _, policy = candidates(ModelSource.from_path(toy_dir), CPU, HpiConfig(allow_reduced_precision=False))
    assert "paddle[bf16]" not in policy  # switched off by the user, not missing from the hardware


def test_reduced_precision_is_a_candidate_on_a_cpu_with_it(toy_dir, monkeypatch):
    fake_cpu_flags(monkeypatch, add=("avx512f", "avx512_bf16"))  # the candidate list is decided in this process
    cands, skipped = candidates(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1))
    assert {"paddle[bf16]", "openvino[bf16]"} <= {c.label for c in cands}
    assert "paddle[bf16]" not in skipped


PADDLE_INT8 = "Paddle Inference runs int8 on CPU only from a model quantised with PaddleSlim, which hpi does not produce"


def test_int8_is_a_candidate_on_avx2_without_vnni_with_7_bit_weights(toy_dir, cpu_without_vnni, calibration_dir):
    """The AVX2-only CPU of issue 21: int8 is offered on OpenVINO and ONNX Runtime, each saying how it avoids
    16-bit saturation; Paddle says what it lacks (a PaddleSlim model), not that int8 would be emulated."""
    cfg = HpiConfig(threads=1, calibration_data=str(calibration_dir))
    cands, skipped = candidates(ModelSource.from_path(toy_dir), CPU, cfg)
    int8 = {c.label: c for c in cands if c.precision == "int8"}
    assert set(int8) == {"onnxruntime[int8]", "openvino[int8]"}
    assert all(c.config["calibration_data"] == str(calibration_dir) for c in int8.values())
    assert skipped["paddle[int8]"] == PADDLE_INT8
    assert not any("emulated" in why for why in skipped.values())
    assert int8_overflow(int8["openvino[int8]"], CPU) == \
        "7-bit weights (NNCF OverflowFix.ENABLE): no VNNI/AVX-VNNI/AMX-INT8"
    assert int8_overflow(int8["onnxruntime[int8]"], CPU) == "7-bit weights (reduce_range=True): no VNNI/AVX-VNNI/AMX-INT8"
    assert int8_overflow(Candidate("onnxruntime", "fp32"), CPU) == ""


def test_int8_is_a_candidate_with_vnni_with_8_bit_weights(toy_dir, monkeypatch):
    fake_cpu_flags(monkeypatch, add=("avx2", "avx512f", "avx512_vnni"))
    cands, skipped = candidates(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1))
    int8 = {c.label: c for c in cands if c.precision == "int8"}
    assert set(int8) == {"onnxruntime[int8]", "openvino[int8]"} and skipped["paddle[int8]"] == PADDLE_INT8
    assert int8_overflow(int8["openvino[int8]"], CPU).startswith("8-bit weights (NNCF OverflowFix.DISABLE)")
    assert int8_overflow(int8["onnxruntime[int8]"], CPU).startswith("8-bit weights (reduce_range=False)")
    cands, _ = candidates(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False))
    assert "int8" not in {c.precision for c in cands}


def test_int8_without_avx2_is_absent_and_says_what_is_missing(toy_dir, monkeypatch):
    fake_cpu_flags(monkeypatch, keep=lambda f: f.startswith("sse"))
    cands, skipped = candidates(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1))
    assert "int8" not in {c.precision for c in cands}
    assert skipped["openvino[int8]"] == "this CPU has no AVX2, which int8 kernels need for their 8-bit multiply-add " \
        "(vpmaddubsw)" == skipped["onnxruntime[int8]"]
