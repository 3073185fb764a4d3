"""hpi/bench/plot.py: the chart plots the figure the selection decided on, so the winner is its fastest bar."""

from __future__ import annotations

import dataclasses

from hpi.bench import ModelBench
from hpi.bench.plot import decisive_rounds, plot
from hpi.config import AccuracyGate
from hpi.harness import Timing
from hpi.selection import measure
from hpi.selection.candidates import Candidate
from hpi.selection.record import CandidateResult, SelectionRecord


def _result(label: str, inference: tuple[float, ...], e2e: tuple[float, ...]) -> CandidateResult:
    backend, _, precision = label.partition("[")
    median = lambda values: Timing.from_samples([int(sorted(values)[1] * 1e6)])  # noqa: E731
    return CandidateResult(Candidate(backend, precision.rstrip("]")), "passed", "within thresholds",
                           median(inference), rounds_p50_ms=inference, e2e_timing=median(e2e),
                           rounds_e2e_p50_ms=e2e)


def _record() -> SelectionRecord:
    """The PP-HGNet_small shape of issue 21: one candidate much faster at inference alone but not end to end, and
    the one chosen on end-to-end rounds, whose inference bar alone would look slower."""
    ref = _result("paddle[fp32]", (10.0, 10.2, 10.1), (20.0, 21.0, 22.0))
    inference_fast = _result("onnxruntime[fp32]", (5.0, 5.1, 5.2), (19.6, 20.6, 21.5))
    e2e_fast = _result("openvino[fp32]", (11.0, 11.5, 12.0), (15.0, 15.5, 16.0))
    passed = [ref, inference_fast, e2e_fast]
    winner, why = measure.pick_winner(ref, passed)
    assert winner is e2e_fast
    results = tuple(dataclasses.replace(r, ratio_interval=measure.ratio_interval(ref, r) if r is not ref else None,
                                        **({"status": "winner", "reason": why} if r is winner else {}))
                    for r in passed)
    return SelectionRecord("PP-HGNet_small", "hash", "cpu", "sig", 1, 2, "paddle[fp32]", results, {}, AccuracyGate(),
                           True, 0.0)


def test_the_winner_is_the_fastest_bar_of_the_figure_it_was_chosen_on(tmp_path):
    record = _record()
    plotted = {r.candidate.label: decisive_rounds(record, r) for r in record.results}
    assert all(path == "end to end" for _, path in plotted.values())
    medians = {label: sorted(rounds)[1] for label, (rounds, _) in plotted.items()}
    assert min(medians, key=medians.get) == record.winner.candidate.label == "openvino[fp32]"
    assert record.winner.timing.p50_ms > record.normal.timing.p50_ms  # inference alone would draw it slowest
    bench = ModelBench("PP-HGNet_small", "seeded", "cpu", [{"threads": 2, "batch_size": 1, "record": record}])
    out = plot([bench], tmp_path / "chart.png")
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_candidate_timed_only_at_inference_is_plotted_at_inference():
    record = _record()
    lone = dataclasses.replace(record.results[1], rounds_e2e_p50_ms=(), e2e_timing=None, ratio_interval=None)
    assert decisive_rounds(record, lone) == ([5.0, 5.1, 5.2], "inference")


def test_a_rejected_candidate_is_plotted_on_its_first_rounds_end_to_end_figure():
    """A candidate the gate rejected ran one round: its end-to-end p50 of that round is plotted, on the same figure
    as the others, not its inference p50."""
    record = _record()
    rejected = CandidateResult(Candidate("openvino", "int8"), "rejected", "top-5 overlap 0.4 < 0.8",
                               Timing.from_samples([int(4e6)]), e2e_timing=Timing.from_samples([int(14e6)]))
    assert decisive_rounds(record, rejected) == ([14.0], "end to end")
