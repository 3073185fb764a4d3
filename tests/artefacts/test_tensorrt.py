"""Tests for hpi/artefacts/tensorrt.py: config validation, optimisation profiles, plan and timing-cache keys.

Everything here runs without TensorRT or a GPU; building real plans is tested in tests/backends/test_tensorrt.py
(marked ``gpu`` and ``tensorrt``).
"""

from __future__ import annotations

import pytest

from hpi.artefacts import tensorrt as trt_build
from hpi.artefacts.onnx import onnx_inputs
from hpi.artefacts.tensorrt import InputProfile, TensorRtConfig
from hpi.cache import EngineCache, cache_key
from hpi.errors import BackendUnavailableError, ExportError, InvalidConfigError
from hpi.trtlibs import tensorrt_installed
from tests.tiny_onnx import tiny_onnx, tiny_source


def test_config_defaults_and_aliases():
    cfg = TensorRtConfig()
    assert (cfg.precision, cfg.min_batch, cfg.opt_batch, cfg.max_batch) == ("fp32", 1, 1, 8)
    assert cfg.timing_cache is True and cfg.tf32 is False
    assert TensorRtConfig.from_dict({"max_batch_size": 16}).max_batch == 16


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


def test_profile_takes_the_batch_range_from_the_config(tmp_path):
    onnx_file = tiny_onnx(tmp_path / "model.onnx")
    (profile,) = trt_build.input_profiles(onnx_file, TensorRtConfig(min_batch=1, opt_batch=4, max_batch=8))
    assert profile == InputProfile("x", (1, 3, 16, 16), (4, 3, 16, 16), (8, 3, 16, 16))
    assert profile.dynamic_batch


def test_fixed_batch_model_gets_a_fixed_profile(tmp_path):
    onnx_file = tiny_onnx(tmp_path / "model.onnx", batch=1)
    (profile,) = trt_build.input_profiles(onnx_file, TensorRtConfig(max_batch=8))
    assert profile.min_shape == profile.max_shape == (1, 3, 16, 16)
    assert not profile.dynamic_batch


def test_dynamic_spatial_dims_need_input_dims(tmp_path):
    onnx_file = tiny_onnx(tmp_path / "model.onnx", height="H", width="W")
    with pytest.raises(ExportError, match="input 'x' has shape"):
        trt_build.input_profiles(onnx_file, TensorRtConfig())
    (profile,) = trt_build.input_profiles(onnx_file, TensorRtConfig(max_batch=2), {"x": [None, 3, 32, 24]})
    assert profile.max_shape == (2, 3, 32, 24)
    with pytest.raises(ExportError, match="'y'"):
        trt_build.input_profiles(onnx_file, TensorRtConfig(), {"y": [None, 3, 32, 24]})
    with pytest.raises(ExportError, match="does not fit"):
        trt_build.input_profiles(onnx_file, TensorRtConfig(), {"x": [None, 4, 32, 24]})


def test_spatial_dims_come_from_inference_yml_for_a_single_image_input(tmp_path):
    source = tiny_source(tmp_path / "m", height="H", width="W")
    inputs = onnx_inputs(source.model_file)
    assert inputs == [("x", [None, 3, None, None])]
    assert trt_build.spec_input_dims(source, inputs) == {"x": [None, 3, 16, 16]}
    static = tiny_source(tmp_path / "s")
    assert trt_build.spec_input_dims(static, onnx_inputs(static.model_file)) is None


PROFILE = [InputProfile("x", (1, 3, 16, 16), (1, 3, 16, 16), (8, 3, 16, 16))]
CU12 = "10.13.0|tensorrt-cu12-libs==10.13.0.35"
CU13 = "10.13.0|tensorrt-cu13-libs==10.13.0.35"


def test_plan_key_changes_with_everything_that_changes_the_plan():
    base = trt_build.plan_cache_parts("onnxkey", CU12, "gpusig", TensorRtConfig(), PROFILE)
    assert base["onnx"] == "onnxkey" and base["tensorrt"] == CU12 and base["device"] == "gpusig"
    assert base["recipe"] == trt_build.PLAN_RECIPE
    variants = [
        trt_build.plan_cache_parts("other", CU12, "gpusig", TensorRtConfig(), PROFILE),
        # cu12 and cu13 builds report the same version string: the distribution tells them apart
        trt_build.plan_cache_parts("onnxkey", CU13, "gpusig", TensorRtConfig(), PROFILE),
        trt_build.plan_cache_parts("onnxkey", CU12, "othergpu", TensorRtConfig(), PROFILE),
        trt_build.plan_cache_parts("onnxkey", CU12, "gpusig", TensorRtConfig(precision="fp16"), PROFILE),
        trt_build.plan_cache_parts("onnxkey", CU12, "gpusig", TensorRtConfig(optimization_level=5), PROFILE),
        trt_build.plan_cache_parts("onnxkey", CU12, "gpusig", TensorRtConfig(tf32=True), PROFILE),
        trt_build.plan_cache_parts("onnxkey", CU12, "gpusig", TensorRtConfig(),
                                   [InputProfile("x", (1, 3, 16, 16), (4, 3, 16, 16), (8, 3, 16, 16))]),
    ]
    keys = {cache_key(base), *(cache_key(v) for v in variants)}
    assert len(keys) == len(variants) + 1
    same = trt_build.plan_cache_parts("onnxkey", CU12, "gpusig", TensorRtConfig(timing_cache=False), PROFILE)
    assert cache_key(same) == cache_key(base)  # the timing cache speeds up builds; it does not change the plan


def test_plan_key_changes_with_the_recipe(monkeypatch):
    base = cache_key(trt_build.plan_cache_parts("onnxkey", CU12, "gpusig", TensorRtConfig(), PROFILE))
    monkeypatch.setattr(trt_build, "PLAN_RECIPE", trt_build.PLAN_RECIPE + 1)
    assert cache_key(trt_build.plan_cache_parts("onnxkey", CU12, "gpusig", TensorRtConfig(), PROFILE)) != base


def test_timing_cache_key_covers_tf32_and_the_cuda_variant():
    def key(**changes):
        fields = {"tensorrt": CU12, "device": "gpusig", "cuda": "runtime 12080 / libs cu12", "tf32": False,
                  "precision": "fp32", **changes}
        return cache_key(trt_build.TimingCacheKey(**fields).parts())

    base = key()
    others = [key(tf32=True), key(cuda="runtime 13000 / libs cu13"), key(tensorrt=CU13), key(device="other"),
              key(precision="fp16")]
    assert len({base, *others}) == len(others) + 1


class _FakeTiming:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def combine(self, other, ignore_mismatch):  # noqa: ANN001
        self.data += other.data
        return True

    def serialize(self) -> bytes:
        return self.data


class _FakeBuildConfig:
    """The two IBuilderConfig calls the timing cache uses, with byte strings standing in for timings."""

    def __init__(self) -> None:
        self.timing = None

    def create_timing_cache(self, data: bytes) -> _FakeTiming:
        return _FakeTiming(bytes(data))

    def get_timing_cache(self) -> _FakeTiming:
        return self.timing


def test_timing_caches_are_cache_entries_merged_per_key(tmp_path):
    cache = EngineCache(tmp_path)
    key = trt_build.TimingCacheKey(CU12, "gpusig", "runtime 12080 / libs cu12", False, "fp32")
    other_key = trt_build.TimingCacheKey(CU12, "gpusig", "runtime 12080 / libs cu12", True, "fp32")
    config = _FakeBuildConfig()
    assert trt_build._seed_timing_cache(config, cache, key).data == b""
    for plan, data in (("plan-a", b"A"), ("plan-b", b"B")):
        config.timing = _FakeTiming(data)
        trt_build._commit_timing_cache(config, cache, key, plan)
    config.timing = _FakeTiming(b"T")
    trt_build._commit_timing_cache(config, cache, other_key, "plan-c")
    entries = [e for e in cache.entries() if e.kind == trt_build.TIMING_KIND]
    assert len(entries) == 3  # each build commits its own sealed entry; none is rewritten
    assert sorted(trt_build._seed_timing_cache(config, cache, key).data) == sorted(b"AB")  # tf32 ones stay apart
    assert trt_build._seed_timing_cache(config, cache, other_key).data == b"T"


def test_evicted_plan_is_rebuilt_by_the_next_lookup(tmp_path):
    cache = EngineCache(tmp_path)
    builds = []

    def build(out):
        builds.append(out)
        (out / trt_build.PLAN_FILE).write_bytes(b"plan %d" % len(builds))

    parts = {"plan": 1}
    artefact = trt_build.Artefact.cached(trt_build.PLAN_KIND, parts, cache.get_or_build("tensorrt", parts, build),
                                         trt_build.PLAN_FILE)
    trt_build.evict(artefact)
    assert not artefact.directory.exists()
    assert cache.lookup("tensorrt", parts) is None
    again = cache.get_or_build("tensorrt", parts, build)
    assert (again / trt_build.PLAN_FILE).read_bytes() == b"plan 2"
    assert not [p for p in again.parent.iterdir() if p.name.startswith(".evicted")]


@pytest.mark.skipif(tensorrt_installed(), reason="tensorrt is installed: this checks the message without it")
def test_build_plan_without_tensorrt_raises_unavailable(tmp_path):
    with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
        trt_build.build_plan(tiny_onnx(tmp_path / "model.onnx"))
