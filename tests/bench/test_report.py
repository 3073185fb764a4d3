"""hpi/bench/report.py: the Markdown, CSV and JSON reports, and reading a JSON report back."""

from __future__ import annotations

import dataclasses
import json
import re

from hpi.bench import ModelBench, format_csv, format_json, format_markdown, load_benches, summary_rows
from hpi.bench.report import target_checks
from hpi.bench.targets import Peaks, cpu_kind
from hpi.harness import Timing
from hpi.selection.candidates import Candidate
from hpi.selection.gate import Accuracy
from hpi.selection.record import CandidateResult

PEAKS = Peaks(2, {"fp32": 311.0, "bf16": 1000.0}, 20.0, {"fp32": "fake"})


def test_bench_formats(toy_bench):
    md = format_markdown([toy_bench])
    assert "| ToyNet | user | 1 | 1 |" in md and "**winner**" in md and "p50 / p90 / p99" in md
    assert "end to end" in md and "fp32 bound: " in md and "reordering spread" in md and "p50 per round" in md
    rows = format_csv([toy_bench]).splitlines()
    assert rows[0].startswith("model,weights,device,threads,batch,candidate,status,p50_ms")
    assert len(rows) > 6
    data = json.loads(format_json([toy_bench]))
    assert data["summary"][0]["model"] == "ToyNet" and "machine" in data


def test_the_header_names_the_cpu_kind_and_load_and_rounds_show_their_spread(toy_bench):
    kind = cpu_kind()
    md = format_markdown([toy_bench], peaks=PEAKS)
    assert f"CPU kind: `{kind.stem}`; flags: {' '.join(kind.flags)}" in md
    assert "Weights: user." in md and f"ToyNet {toy_bench.loadavg[0]} -> {toy_bench.loadavg[1]}" in md
    assert "Measured roofs at 2 threads: fp32 311 GFLOPS, bf16 1000 GFLOPS; memory copy 20.0 GB/s" in md
    assert "end to end p50 per round" in md and "others' CPU per round" in md
    assert re.search(r"\| [0-9.]+ / [0-9.]+ / [0-9.]+ \([0-9.]+x\) \|", md)  # three rounds and their spread
    data = json.loads(format_json([toy_bench], peaks=PEAKS))
    assert data["cpu"]["kind"] == kind.stem and data["peaks"]["gflops"]["bf16"] == 1000.0
    row = data["summary"][0]
    # 3 rounds, more (up to 9) while a candidate's interval straddled the 5% line
    assert row["e2e_speedup"] > 0 and 3 <= len(row["normal_rounds_p50_ms"]) <= 9
    assert "decided on: hp / normal (interval)" in md
    assert row["decided_on"] is None or row["decided_on"]["high"] < row["decided_on"]["line"]
    assert row["target"] is None  # the toy bench ran 1 thread: the targets are stated for 2


def test_target_checks_cover_batch_1_at_2_threads(toy_bench):
    two = ModelBench(toy_bench.model, toy_bench.weights, toy_bench.device,
                     [{**r, "threads": 2} for r in toy_bench.runs], toy_bench.loadavg)
    checks = target_checks([two], cpu_kind(), PEAKS)
    assert [c is not None for c in checks] == [r["batch_size"] == 1 for r in two.runs]
    assert all(c.text for c in checks if c)


def test_a_json_report_reads_back(toy_bench, tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(format_json([toy_bench]), encoding="utf-8")
    (loaded,) = load_benches(path)
    assert loaded.to_dict() == toy_bench.to_dict()
    assert format_csv([loaded]) == format_csv([toy_bench])


def _with_results(bench: ModelBench, results: list[CandidateResult]) -> ModelBench:
    run = bench.runs[0]
    record = dataclasses.replace(run["record"], results=tuple(results))
    return ModelBench(bench.model, bench.weights, bench.device, [{**run, "record": record}])


def _timed(label: str, status: str, p50_ms: float, top1: float = 1.0) -> CandidateResult:
    backend, _, precision = label.partition("[")
    passed = status in ("winner", "passed")
    why = "within thresholds" if passed else f"top-1 agreement {top1:.3f} < 1.0"
    accuracy = Accuracy(top1, 0.9, 0.4, 0.45, 0.97, passed, why)
    return CandidateResult(Candidate(backend, precision.rstrip("]")), status, why,
                           Timing.from_samples([int(p50_ms * 1e6)]), accuracy, rounds_p50_ms=(p50_ms,))


def test_reduced_precision_that_fails_the_gate_is_shown_beside_the_gated_choice(toy_bench):
    """Seeded weights can make every reduced-precision candidate fail the gate: the gated choice stays the winner
    and the fastest of them is shown with its drift, labelled as not passing."""
    results = [_timed("paddle[fp32]", "winner", 10.0), _timed("onnxruntime[fp32]", "passed", 10.5),
               _timed("openvino[bf16]", "rejected", 4.0, top1=0.875),
               _timed("paddle[bf16]", "rejected", 6.0, top1=0.75),
               CandidateResult(Candidate("tensorrt", "-"), "unavailable", "tensorrt does not run on cpu")]
    bench = _with_results(toy_bench, results)
    (row,) = summary_rows([bench])
    assert row["hpi_backend"] == "paddle[fp32]" and row["speedup"] == 1.0  # the gated choice, gate not relaxed
    assert (row["not_passing_candidate"], row["not_passing_p50_ms"], row["not_passing_speedup"]) == \
        ("openvino[bf16]", 4.0, 2.5)
    assert row["not_passing_top1_agreement"] == 0.875 and "top-1 agreement 0.875" in row["not_passing_why"]
    md = format_markdown([bench])
    assert "did NOT pass the default accuracy gate" in md
    assert "| paddle[fp32] (10.00) | openvino[bf16] (4.00) | 2.50x | 0.45000 | 0.875 | 0.900 |" in md
    assert json.loads(format_json([bench]))["summary"][0]["not_passing_candidate"] == "openvino[bf16]"


def test_no_not_passing_row_when_a_reduced_precision_candidate_passed(toy_bench):
    results = [_timed("paddle[fp32]", "passed", 10.0), _timed("openvino[bf16]", "winner", 5.0),
               _timed("paddle[bf16]", "rejected", 4.0, top1=0.75)]
    bench = _with_results(toy_bench, results)
    assert summary_rows([bench])[0]["not_passing_candidate"] is None
    assert "did NOT pass" not in format_markdown([bench])
