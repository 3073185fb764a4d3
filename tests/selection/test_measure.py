"""hpi/selection/measure.py: measuring every candidate, the winner, losers and why, and bugs that must surface."""

from __future__ import annotations

import json

import pytest

from hpi.cache import EngineCache
from hpi.config import HpiConfig
from hpi.device import Device
from hpi.errors import HpiInternalError
from hpi.model import ModelSource
from hpi.selection import measure
from hpi.selection.choice import choice_from_record
from hpi.selection.record import SelectionRecord

CPU = Device("cpu")


def test_select_picks_the_fastest_passing_and_records_losers(toy_dir, tmp_path):
    source = ModelSource.from_path(toy_dir)
    record = measure.select(source, CPU, HpiConfig(threads=1), cache=EngineCache(tmp_path), budget_s=0.2,
                            isolate=False)
    passed = [r for r in record.results if r.status in ("winner", "passed")]
    assert record.winner.timing.p50_ms == min(r.timing.p50_ms for r in passed)
    assert record.reference == "paddle[fp32]" and record.normal is not None
    assert {r.candidate.backend for r in record.results} == {"paddle", "onnxruntime", "openvino", "tensorrt"}
    assert next(r for r in record.results if r.candidate.backend == "tensorrt").status == "unavailable"
    for r in passed:
        assert r.accuracy.top1_agreement == 1.0
    again = SelectionRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    choice = choice_from_record(record)
    assert choice.mode == "measured" and choice.backend == record.winner.candidate.backend


def test_a_wrong_backend_is_rejected(toy_dir, tmp_path, monkeypatch):
    """A candidate whose outputs disagree with the reference never wins, however fast it is."""
    from hpi.backends import onnxruntime as ort_backend

    original = ort_backend.OrtEngine._run

    def broken(self, feed):
        out = original(self, feed)
        return [o[:, ::-1].copy() for o in out]  # permuted classes: fast and wrong

    monkeypatch.setattr(ort_backend.OrtEngine, "_run", broken)
    record = measure.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False),
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
    record = measure.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False),
                            cache=EngineCache(tmp_path), budget_s=0.1, isolate=False)
    paddle = next(r for r in record.results if r.candidate.label == "paddle[fp32]")
    assert paddle.status == "rejected" and "which agree with each other" in paddle.reason
    assert record.winner.candidate.backend in ("onnxruntime", "openvino")


def crash_on_openvino(request):
    """Run in the measuring child process: a bug (not an HpiError) while measuring the OpenVINO candidate."""
    if request["backend"] == "openvino":
        raise KeyError("simulated bug in the openvino candidate")
    return measure.measure_candidate(request)


def test_a_bug_in_a_candidate_process_surfaces_with_its_traceback(toy_dir, tmp_path, monkeypatch):
    """A child process that dies of a non-hpi exception is a bug, not a losing candidate: selection stops with
    HpiInternalError carrying the child's traceback instead of recording the candidate as failed."""
    real = measure.run_isolated
    monkeypatch.setattr(measure, "run_isolated",
                        lambda function, request: real(f"{__name__}:crash_on_openvino", request))
    with pytest.raises(HpiInternalError, match="simulated bug in the openvino candidate") as info:
        measure.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False),
                       cache=EngineCache(tmp_path), budget_s=0.05)
    message = str(info.value)
    assert "Traceback (most recent call last)" in message and "crash_on_openvino" in message
