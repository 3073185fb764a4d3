"""hpi/selection.py: candidates, the accuracy gate, the cached decision and when it is measured again."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hpi
from hpi import selection
from hpi.cache import EngineCache
from hpi.device import Device
from hpi.model import ModelSource
from hpi.select import HpiConfig
from hpi.selection import AccuracyGate, Candidate, compare_outputs

CPU = Device("cpu")


def test_candidates_on_this_cpu(toy_dir):
    cands, skipped = selection.candidates(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1))
    labels = {c.label for c in cands}
    assert {"paddle[fp32]", "onnxruntime[fp32]", "openvino[fp32]"} <= labels
    assert "tensorrt" in skipped
    assert all(c.config.get("threads") == 1 for c in cands)
    fp32_only, _ = selection.candidates(ModelSource.from_path(toy_dir), CPU, HpiConfig(allow_reduced_precision=False))
    assert {c.precision for c in fp32_only} == {"fp32"}


def test_onnx_model_has_no_paddle_candidate(orientation_dir):
    cands, skipped = selection.candidates(ModelSource.from_path(orientation_dir), CPU, HpiConfig())
    assert "paddle" not in {c.backend for c in cands} and "cannot load onnx" in skipped["paddle"]
    ref = selection.reference_candidate(ModelSource.from_path(orientation_dir), CPU, HpiConfig())
    assert ref.backend == "onnxruntime"


def test_gate_thresholds():
    gate = AccuracyGate()
    ref = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert compare_outputs("classification", ref, ref + 1e-5, "fp32", gate).passed
    small = compare_outputs("classification", ref, ref + 0.01, "fp32", gate)
    assert not small.passed and "relative error" in small.why
    assert compare_outputs("classification", ref, ref + 0.01, "bf16", gate).passed  # reduced: judged by ranking
    bounded = AccuracyGate(max_rel_error_reduced=1e-3)
    assert not compare_outputs("classification", ref, ref + 0.01, "bf16", bounded).passed
    ref6 = np.array([[0.5, 0.2, 0.1, 0.08, 0.06, 0.04, 0.02]])
    shuffled = np.array([[0.5, 0.001, 0.002, 0.003, 0.004, 0.3, 0.2]])  # same top-1, top-5 mostly different
    res = compare_outputs("classification", ref6, shuffled, "bf16", gate)
    assert not res.passed and res.top1_agreement == 1.0 and "top-5 overlap 0.600" in res.why
    swapped = compare_outputs("classification", ref, ref[:, ::-1], "bf16", gate)
    assert not swapped.passed and "top-1 agreement 0.000" in swapped.why
    emb = np.random.default_rng(0).normal(size=(4, 16))
    assert compare_outputs("embedding", emb, emb * 1.001, "fp32", gate).passed
    assert not compare_outputs("embedding", emb, emb + 0.5, "fp32", gate).passed
    assert not compare_outputs("classification", ref, ref[:1], "fp32", gate).passed


def test_select_picks_the_fastest_passing_and_records_losers(toy_dir, tmp_path):
    source = ModelSource.from_path(toy_dir)
    record = selection.select(source, CPU, HpiConfig(threads=1), cache=EngineCache(tmp_path), budget_s=0.2,
                              isolate=False)
    passed = [r for r in record.results if r.status in ("winner", "passed")]
    assert record.winner.timing.p50_ms == min(r.timing.p50_ms for r in passed)
    assert record.reference == "paddle[fp32]" and record.normal is not None
    assert {r.candidate.backend for r in record.results} == {"paddle", "onnxruntime", "openvino", "tensorrt"}
    assert next(r for r in record.results if r.candidate.backend == "tensorrt").status == "unavailable"
    for r in passed:
        assert r.accuracy.top1_agreement == 1.0
    again = selection.SelectionRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    choice = record.choice()
    assert choice.mode == "measured" and choice.backend == record.winner.candidate.backend


def test_a_wrong_backend_is_rejected(toy_dir, tmp_path, monkeypatch):
    """A candidate whose outputs disagree with the reference never wins, however fast it is."""
    from hpi.backends import onnxruntime as ort_backend

    original = ort_backend.OrtEngine._run

    def broken(self, feed):
        out = original(self, feed)
        return [o[:, ::-1].copy() for o in out]  # permuted classes: fast and wrong

    monkeypatch.setattr(ort_backend.OrtEngine, "_run", broken)
    record = selection.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False),
                              cache=EngineCache(tmp_path), budget_s=0.1, isolate=False)
    ort = next(r for r in record.results if r.candidate.backend == "onnxruntime")
    assert ort.status == "rejected" and "top-1 agreement" in ort.reason
    assert record.winner.candidate.backend != "onnxruntime"


def test_a_wrong_reference_is_outvoted(toy_dir, tmp_path, monkeypatch):
    """When Paddle itself is wrong and the other fp32 backends agree with each other (Paddle + oneDNN on ConvNeXt),
    the agreeing backends become the reference and Paddle is rejected, with the reason recorded."""
    from hpi.backends import paddle as paddle_backend

    original = paddle_backend.PaddleEngine._run
    monkeypatch.setattr(paddle_backend.PaddleEngine, "_run",
                        lambda self, feed: [o[:, ::-1].copy() for o in original(self, feed)])
    record = selection.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False),
                              cache=EngineCache(tmp_path), budget_s=0.1, isolate=False)
    paddle = next(r for r in record.results if r.candidate.label == "paddle[fp32]")
    assert paddle.status == "rejected" and "which agree with each other" in paddle.reason
    assert record.winner.candidate.backend in ("onnxruntime", "openvino")


def test_use_hpip_reuses_the_decision_across_processes(toy_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    model = hpi.create_model("ToyNet", toy_dir, device="cpu", use_hpip=True, hpi_config={"threads": 1},
                             cache_dir=cache_dir)
    assert model.choice.mode == "measured"
    decisions = EngineCache(cache_dir).entries()
    assert sum(e.kind == "decision" for e in decisions) == 1
    script = textwrap.dedent(f"""
        import time, hpi
        from hpi import selection
        def boom(*a, **k):
            raise SystemExit("selection ran again instead of reusing the cached decision")
        selection.select = boom
        t = time.perf_counter()
        m = hpi.create_model("ToyNet", {str(toy_dir)!r}, device="cpu", use_hpip=True, hpi_config={{"threads": 1}},
                             cache_dir={str(cache_dir)!r})
        print(m.backend, m.choice.precision)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [model.backend, model.choice.precision]


def test_version_or_policy_change_measures_again(toy_dir, tmp_path, monkeypatch):
    source = ModelSource.from_path(toy_dir)
    cache = EngineCache(tmp_path)
    runs = []
    real_select = selection.select

    def counting_select(*args, **kwargs):
        runs.append(1)
        return real_select(*args, **{**kwargs, "isolate": False, "budget_s": 0.1})

    monkeypatch.setattr(selection, "select", counting_select)
    cfg = HpiConfig(threads=1)
    selection.cached_selection(source, CPU, cfg, cache=cache)
    selection.cached_selection(source, CPU, cfg, cache=cache)
    assert len(runs) == 1  # cached
    selection.cached_selection(source, CPU, HpiConfig(threads=1, allow_reduced_precision=False), cache=cache)
    assert len(runs) == 2  # precision policy changed
    real_versions = selection.library_versions
    monkeypatch.setattr(selection, "library_versions", lambda d: {**real_versions(d), "openvino": "9999.0"})
    selection.cached_selection(source, CPU, cfg, cache=cache)
    assert len(runs) == 3  # a library version changed
    assert sum(e.kind == "decision" for e in cache.entries()) == 3


def test_gate_is_configurable_through_hpi_config():
    from hpi.errors import InvalidConfigError

    cfg = HpiConfig.from_dict({"accuracy_gate": {"max_rel_error_reduced": 0.05, "min_top5_overlap": 1.0}})
    assert cfg.gate().max_rel_error_reduced == 0.05 and cfg.gate().min_top5_overlap == 1.0
    with pytest.raises(InvalidConfigError, match="accuracy_gate: unknown key"):
        HpiConfig.from_dict({"accuracy_gate": {"top1": 1}}).gate()


def test_candidate_label():
    assert Candidate("onnxruntime", "fp16", {"use_tensorrt": True}).label == "onnxruntime+trt[fp16]"
