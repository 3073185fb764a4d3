"""hpi/benchmark/report.py: the Markdown, CSV and JSON reports, and reading a JSON report back."""

from __future__ import annotations

import json

from hpi.benchmark import format_csv, format_json, format_markdown, load_benches


def test_bench_formats(toy_bench):
    md = format_markdown([toy_bench])
    assert "| ToyNet | user | 1 | 1 |" in md and "**winner**" in md and "p50 / p90 / p99" in md
    assert "end to end" in md
    rows = format_csv([toy_bench]).splitlines()
    assert rows[0].startswith("model,weights,device,threads,batch,candidate,status,p50_ms")
    assert len(rows) > 6
    data = json.loads(format_json([toy_bench]))
    assert data["summary"][0]["model"] == "ToyNet" and "machine" in data


def test_a_json_report_reads_back(toy_bench, tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(format_json([toy_bench]), encoding="utf-8")
    (loaded,) = load_benches(path)
    assert loaded.to_dict() == toy_bench.to_dict()
    assert format_csv([loaded]) == format_csv([toy_bench])
