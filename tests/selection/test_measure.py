"""hpi/selection/measure.py: measuring every candidate, the winner, losers and why, and bugs that must surface."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hpi.cache import EngineCache
from hpi.config import HpiConfig
from hpi.device import Device
from hpi.errors import HpiInternalError
from hpi.harness import Timing
from hpi.selection import measure, worker
from hpi.selection.candidates import Candidate
from hpi.selection.choice import choice_from_record
from hpi.selection.gate import fp32_bound
from hpi.selection.record import CandidateResult, SelectionRecord
from hpi.source import ModelSource

CPU = Device("cpu")


def test_select_picks_the_fastest_passing_and_records_losers(toy_dir, tmp_path):
    source = ModelSource.from_path(toy_dir)
    record = measure.select(source, CPU, HpiConfig(threads=1), cache=EngineCache(tmp_path), budget_s=0.2,
                            max_rounds=measure.ROUNDS, isolate=False)
    passed = [r for r in record.results if r.status in ("winner", "passed")]
    reference = next(r for r in passed if r.candidate.label == "paddle[fp32]")
    as_passed = [dataclasses.replace(r, status="passed") if r.status == "winner" else r for r in passed]
    winner, why = measure.pick_winner(next(r for r in as_passed if r.candidate == reference.candidate), as_passed)
    assert (record.winner.candidate, record.winner.reason.split(";")[0]) == (winner.candidate, why)
    assert all(len(r.rounds_p50_ms) == measure.ROUNDS for r in passed)
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
    return worker.measure_candidate(request)


def test_a_bug_in_a_candidate_process_surfaces_with_its_traceback(toy_dir, tmp_path, monkeypatch):
    """A child process that dies of a non-hpi exception is a bug, not a losing candidate: selection stops with
    HpiInternalError carrying the child's traceback instead of recording the candidate as failed."""
    real = measure.IsolatedWorker
    monkeypatch.setattr(measure, "IsolatedWorker", lambda function: real(f"{__name__}:crash_on_openvino"))
    with pytest.raises(HpiInternalError, match="simulated bug in the openvino candidate") as info:
        measure.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False),
                       cache=EngineCache(tmp_path), budget_s=0.05)
    message = str(info.value)
    assert "Traceback (most recent call last)" in message and "crash_on_openvino" in message


def test_the_record_says_why_bf16_is_absent_and_how_int8_avoids_overflow(toy_dir, tmp_path, cpu_without_bf16):
    record = measure.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1), cache=EngineCache(tmp_path),
                            budget_s=0.05, isolate=False)
    absent = {r.candidate.label: r for r in record.results if r.candidate.precision == "bf16"}
    assert set(absent) == {"paddle[bf16]", "openvino[bf16]"}
    assert all(r.status == "unavailable" and "neither AMX-BF16 nor AVX512-BF16" in r.reason for r in absent.values())
    assert SelectionRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    # The same AVX2-only CPU runs int8, and the record says how each int8 model avoids 16-bit saturation.
    int8 = {r.candidate.label: r for r in record.results if r.candidate.precision == "int8"}
    assert int8["openvino[int8]"].status != "unavailable" and int8["onnxruntime[int8]"].status != "unavailable"
    assert int8["openvino[int8]"].int8_overflow.startswith("7-bit weights (NNCF OverflowFix.ENABLE)")
    assert int8["onnxruntime[int8]"].int8_overflow.startswith("7-bit weights (reduce_range=True)")
    assert all(not r.int8_overflow for r in record.results if r.candidate.precision != "int8")


def test_the_fp32_bound_is_measured_and_a_perturbed_weight_is_rejected(toy_dir, tmp_path, monkeypatch):
    """The record keeps the reference's reordering spread and the bound it gave; an ONNX conversion with one
    weight changed (ONNX Runtime fed a perturbed copy) differs beyond rounding and is rejected."""
    import onnx
    from onnx import numpy_helper

    from hpi.artefacts.artefact import Artefact
    from hpi.backends import onnxruntime as ort_backend

    real = ort_backend.model_onnx

    def perturbed(source, cache, **kwargs):  # noqa: ANN001, ANN202
        model = onnx.load(str(real(source, cache, **kwargs).path))
        weight = next(a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
                      if a.name == "value" and len(a.t.dims) >= 2)  # the first conv's weights
        values = numpy_helper.to_array(weight).copy()
        values.flat[0] += 0.1 * float(np.abs(values).max())
        weight.CopyFrom(numpy_helper.from_array(values, weight.name))
        path = tmp_path / "perturbed.onnx"
        onnx.save(model, str(path))
        return Artefact("source", "perturbed", path)

    monkeypatch.setattr(ort_backend, "model_onnx", perturbed)
    record = measure.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False),
                            cache=EngineCache(tmp_path / "cache"), budget_s=0.05, isolate=False)
    assert record.fp32_spread is not None and "enable_onednn=False" in record.fp32_spread_from
    assert record.fp32_bound == fp32_bound(record.gate, record.fp32_spread)
    ort = next(r for r in record.results if r.candidate.backend == "onnxruntime")
    assert ort.status == "rejected" and f"> {record.fp32_bound:.2e}" in ort.reason
    assert next(r for r in record.results if r.candidate.backend == "openvino").status in ("winner", "passed")
    assert SelectionRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def _result(label: str, rounds: tuple[float, ...], status: str = "passed") -> CandidateResult:
    backend, _, precision = label.partition("[")
    timing = Timing.from_samples([int(sorted(rounds)[(len(rounds) - 1) // 2] * 1e6)])
    return CandidateResult(Candidate(backend, precision.rstrip("]")), status, "within thresholds", timing,
                           rounds_p50_ms=rounds)


def test_normal_mode_is_kept_unless_a_candidate_is_faster_with_confidence():
    ref = _result("paddle[fp32]", (10.0, 10.0, 10.0, 10.0, 10.0))
    clear = _result("onnxruntime[fp32]", (8.0, 8.5, 8.2, 8.4, 8.1))  # 15-20% faster in every paired round
    winner, why = measure.pick_winner(ref, [ref, clear])
    assert winner is clear and "90% interval" in why and "5 paired rounds" in why
    interval = measure.ratio_interval(ref, clear)
    assert interval.verdict == "faster" and 0.80 <= interval.low <= interval.estimate <= interval.high <= 0.85
    slight = _result("openvino[fp32]", (9.7, 9.6, 9.8, 9.7, 9.6))  # always faster, never by 5%
    lucky = _result("onnxruntime[fp32]", (5.0, 10.5, 11.0, 10.4, 10.6))  # one fast round on a noisy machine
    winner, why = measure.pick_winner(ref, [ref, slight, lucky])
    assert winner is ref and why.startswith("normal mode kept")
    assert measure.ratio_interval(ref, slight).verdict == "not faster"
    assert measure.ratio_interval(ref, lucky).verdict == "undecided"  # it straddles 0.95: more rounds may tell
    rejected_ref = _result("paddle[fp32]", (10.0, 10.0, 10.0), status="rejected")  # outvoted: not a choice
    assert measure.pick_winner(rejected_ref, [slight, lucky])[0] is slight


def test_a_majority_of_fast_rounds_is_not_confidence():
    """Two rounds 10-20% faster and one 20% slower (the old rule's winner): the interval straddles the line, so
    normal mode stays; the same rounds repeated three times (nine in all) narrow it below the line."""
    ref = _result("paddle[fp32]", (10.0,) * 3)
    noisy = _result("onnxruntime[fp32]", (8.0, 9.0, 12.0))
    winner, why = measure.pick_winner(ref, [ref, noisy])
    assert winner is ref and "closest: inference candidate/normal" in why
    interval = measure.ratio_interval(ref, noisy)
    assert interval.low < 0.95 < interval.high and interval.rounds == 3
    many = _result("onnxruntime[fp32]", (8.0, 9.0, 8.5) * 3)
    assert measure.pick_winner(_result("paddle[fp32]", (10.0,) * 9), [many])[0] is many


def test_the_bootstrap_interval_is_seeded_and_averages_ratios_as_logarithms():
    low, estimate, high = measure.bootstrap_interval([0.5, 2.0])
    assert estimate == pytest.approx(1.0) and low == pytest.approx(0.5) and high == pytest.approx(2.0)
    assert measure.bootstrap_interval([0.8, 0.9, 1.1, 0.85]) == measure.bootstrap_interval([0.8, 0.9, 1.1, 0.85])
    low, estimate, high = measure.bootstrap_interval([0.9] * 4)
    assert low == estimate == high == pytest.approx(0.9)


def test_the_choice_compares_end_to_end_rounds_where_they_were_timed():
    """A candidate faster at inference alone but not end to end (the path users run) keeps normal mode, and one
    whose folded preprocessing makes it faster end to end wins on that figure."""
    def timed(label: str, inference: tuple[float, ...], e2e: tuple[float, ...]) -> CandidateResult:
        r = _result(label, inference)
        return dataclasses.replace(r, rounds_e2e_p50_ms=e2e,
                                   e2e_timing=Timing.from_samples([int(sorted(e2e)[1] * 1e6)]))

    ref = timed("paddle[fp32]", (10.0, 10.0, 10.0), (12.0, 12.0, 12.0))
    inference_only = timed("onnxruntime[fp32]", (9.0, 9.0, 9.0), (11.8, 11.9, 11.7))  # 10% at inference, 2% e2e
    winner, why = measure.pick_winner(ref, [ref, inference_only])
    assert winner is ref and why.startswith("normal mode kept")
    folded = timed("openvino[fp32]", (9.8, 9.9, 9.7), (10.5, 10.6, 10.4))  # 1-3% at inference, 12% e2e
    winner, why = measure.pick_winner(ref, [ref, inference_only, folded])
    assert winner is folded and "end to end candidate/normal 0.875" in why
    assert folded.decisive_p50_ms == pytest.approx(10.5)


def _synthetic_timings(monkeypatch, per_backend: dict[str, list[float]]) -> list[str]:  # noqa: ANN001
    """Every timed call of a candidate answers the next of its ``per_backend`` p50s (cycled), end to end and
    inference alike, whatever the machine did: the rounds logic is tested on known figures. Returns the log of the
    backends timed, in order."""
    real = worker.measure_candidate
    calls: list[str] = []
    counts: dict[str, int] = {}

    def synthetic(request):  # noqa: ANN001, ANN202
        answer = real(request)
        if request.get("close") or not request.get("timed", True) or request["backend"] not in per_backend:
            return answer
        series = per_backend[request["backend"]]
        i = counts.get(request["backend"], 0)
        counts[request["backend"]] = i + 1
        calls.append(request["backend"])
        timing = Timing.from_samples([int(series[i % len(series)] * 1e6)]).to_dict()
        return {**answer, "timing": timing, "e2e_timing": timing}

    monkeypatch.setattr(worker, "measure_candidate", synthetic)
    return calls


def test_more_rounds_while_an_interval_straddles_then_normal_mode_if_it_still_does(toy_dir, tmp_path, monkeypatch):
    """ONNX Runtime alternates 8 and 11 ms against Paddle's 10: its interval straddles 0.95, so it and the reference
    are timed again up to max_rounds, and normal mode is kept; OpenVINO, clearly slower, leaves after 3 rounds."""
    calls = _synthetic_timings(monkeypatch, {"paddle": [10.0], "onnxruntime": [8.0, 11.0], "openvino": [12.0]})
    record = measure.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False),
                            cache=EngineCache(tmp_path), budget_s=0.06, rounds=3, max_rounds=6, isolate=False)
    results = {r.candidate.label: r for r in record.results}
    assert record.winner.candidate.label == "paddle[fp32]" and "normal mode kept" in record.winner.reason
    assert calls.count("openvino") == 3 and calls.count("paddle") == calls.count("onnxruntime") == 6
    ort = results["onnxruntime[fp32]"].ratio_interval
    assert ort.verdict == "undecided" and ort.rounds == 6 and ort.path == "end to end"
    assert results["openvino[fp32]"].ratio_interval.verdict == "not faster"
    assert SelectionRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_a_clearly_faster_candidate_wins_in_the_first_rounds(toy_dir, tmp_path, monkeypatch):
    calls = _synthetic_timings(monkeypatch, {"paddle": [10.0, 10.4], "onnxruntime": [7.0, 7.2], "openvino": [9.0]})
    record = measure.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False),
                            cache=EngineCache(tmp_path), budget_s=0.06, rounds=3, max_rounds=6, isolate=False)
    assert record.winner.candidate.label == "onnxruntime[fp32]" and len(calls) == 9  # decided: no extra round
    assert record.winner.ratio_interval.verdict == "faster" and record.winner.ratio_interval.high < 0.95


def test_candidates_are_timed_in_interleaved_rounds_within_the_budget(toy_dir, tmp_path, monkeypatch):
    calls = []
    real = worker.measure_candidate

    def logged(request):  # noqa: ANN001, ANN202
        if not request.get("close"):
            calls.append((request["backend"], request["timed"], request["budget_s"], request["e2e_config"]))
        return real(request)

    loads = []
    real_load = worker.engine_from_request
    monkeypatch.setattr(worker, "measure_candidate", logged)
    monkeypatch.setattr(worker, "engine_from_request", lambda request: loads.append(1) or real_load(request))
    record = measure.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False),
                            cache=EngineCache(tmp_path), budget_s=0.3, rounds=3, max_rounds=3, isolate=False)
    # Each engine loaded once and kept through the rounds, then closed: three candidates, the reordering variant,
    # and the folded graphs that ONNX Runtime and OpenVINO run end to end in high-performance mode.
    assert len(loads) == 6 and not worker._KEPT
    timed = [backend for backend, is_timed, _, _ in calls if is_timed]
    first = timed[:3]
    # reference, A, B, then B, A, reference, then reference, A, B: no candidate always follows the same one
    assert first[0] == "paddle" and timed == first + first[::-1] + first
    assert all(budget == pytest.approx(0.05) for _, _, budget, _ in calls)  # a round's share, half end to end
    folds = {backend: e2e.get("fold_preprocess", False) for backend, _, _, e2e in calls}
    assert folds == {"paddle": False, "onnxruntime": True, "openvino": True}
    assert [b for b, is_timed, _, _ in calls if not is_timed] == ["paddle"]  # the fp32 reordering variant
    for r in record.results:
        if r.timing:
            assert len(r.rounds_e2e_p50_ms) == 3 and r.e2e_timing.p50_ms in r.rounds_e2e_p50_ms
            assert len(r.rounds_other_cores) == 3 and all(c >= 0 for c in r.rounds_other_cores)
    again = SelectionRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record and all(len(r.rounds_p50_ms) == 3 for r in record.results if r.timing)


# ---------------------------------------------------------------------------------------------------------------
# detectors: post-NMS boxes judged by the box gate


def test_a_detector_is_selected_with_the_box_gate(seeded_detector_dir, tmp_path):
    record = measure.select(ModelSource.from_path(seeded_detector_dir), CPU, HpiConfig(threads=1),
                            cache=EngineCache(tmp_path), budget_s=0.2, isolate=False)
    results = {r.candidate.label: r for r in record.results}
    assert record.reference == "paddle[fp32]"
    assert {"paddle[fp32]", "onnxruntime[fp32]", "openvino[fp32]"} <= set(results)
    for label in ("paddle[fp32]", "onnxruntime[fp32]", "openvino[fp32]"):
        r = results[label]
        assert r.status in ("winner", "passed") and len(r.rounds_p50_ms) >= measure.ROUNDS, (label, r.reason)
        acc = r.accuracy
        assert acc.box_recall == acc.box_precision == 1.0 and acc.min_box_iou > 0.99 and acc.boxes_compared > 20
        assert acc.top1_agreement is None and "box recall 1.000" in r.reason
    assert "box gate judged" in record.fp32_spread_from and "enable_onednn=False" in record.fp32_spread_from
    assert record.gate.min_box_iou_fp32 == 0.98  # the gate's tolerances are part of the record
    assert SelectionRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert choice_from_record(record).backend == record.winner.candidate.backend


def test_a_perturbed_detector_conversion_is_rejected(seeded_detector_dir, tmp_path, monkeypatch):
    """ONNX Runtime fed a copy of the detector's ONNX with one box-regression weight changed: its boxes move, the
    box gate names the images and what failed; OpenVINO (its own conversion) still passes."""
    import onnx
    from onnx import numpy_helper

    from hpi.artefacts.artefact import Artefact
    from hpi.backends import onnxruntime as ort_backend

    real = ort_backend.model_onnx

    def perturbed(source, cache, **kwargs):  # noqa: ANN001, ANN202
        model = onnx.load(str(real(source, cache, **kwargs).path))
        tensors = [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
        tensors += list(model.graph.initializer)
        weight = next(t for t in tensors if list(t.dims) == [4, 8, 1, 1])  # the box-side regression conv
        values = numpy_helper.to_array(weight).copy()
        values[:, 0] += 0.5
        weight.CopyFrom(numpy_helper.from_array(values, weight.name))
        path = tmp_path / "perturbed.onnx"
        onnx.save(model, str(path))
        return Artefact("source", "perturbed", path)

    monkeypatch.setattr(ort_backend, "model_onnx", perturbed)
    record = measure.select(ModelSource.from_path(seeded_detector_dir), CPU,
                            HpiConfig(threads=1, allow_reduced_precision=False), cache=EngineCache(tmp_path / "c"),
                            budget_s=0.1, isolate=False)
    ort = next(r for r in record.results if r.candidate.backend == "onnxruntime")
    assert ort.status == "rejected" and "reference boxes not reproduced at IoU >= 0.98" in ort.reason
    assert ort.reason.split(":")[0] in dict(measure.reference_images())  # the verdict names an image
    assert ort.accuracy.box_recall < 0.9
    assert next(r for r in record.results if r.candidate.backend == "openvino").status in ("winner", "passed")
