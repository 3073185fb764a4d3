"""hpi/benchmark/report.py: the Markdown, CSV and JSON reports, and reading a JSON report back."""

from __future__ import annotations

import json
import re

from hpi.benchmark import ModelBench, format_csv, format_json, format_markdown, load_benches
from hpi.benchmark.report import target_checks
from hpi.benchmark.targets import Peaks, cpu_kind

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
    assert row["e2e_speedup"] > 0 and len(row["normal_rounds_p50_ms"]) == 3
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
