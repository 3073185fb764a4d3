"""benchmarks/run_core.py: one table per kind of CPU, named from cpu_info, and one model merged in at a time."""

from __future__ import annotations

import json

from hpi.bench.targets import Peaks, cpu_kind
from tests.benchmarks.scripts import load_script

EPYC = {"model": "AMD EPYC 7B13", "cores": 2, "flags": ["avx", "avx2", "fma"]}


def test_the_table_is_named_by_cpu_kind_and_merges_one_model_at_a_time(toy_bench, tmp_path, monkeypatch):
    run_core = load_script("run_core")
    monkeypatch.setattr(run_core, "RESULTS", tmp_path)
    monkeypatch.setattr(run_core, "cpu_kind", lambda: cpu_kind(EPYC))  # as if run on the AVX2-only EPYC
    monkeypatch.setattr(run_core, "measure_peaks", lambda: Peaks(2, {"fp32": 100.0}, 10.0, {}))
    monkeypatch.setattr(run_core, "plot", lambda benches, path: path)

    def fake_benches(models, device, **options):  # noqa: ANN001, ANN202
        for name in models:
            yield type(toy_bench)(name, toy_bench.weights, toy_bench.device, toy_bench.runs, toy_bench.loadavg)

    monkeypatch.setattr(run_core, "bench_models", fake_benches)
    assert run_core.main(["--models", "ModelA", "--merge"]) == 0
    assert run_core.main(["--models", "ModelB", "--merge"]) == 0
    data = json.loads((tmp_path / "core-amd-epyc-avx2.json").read_text(encoding="utf-8"))
    assert [m["model"] for m in data["models"]] == ["ModelA", "ModelB"] and data["cpu"]["kind"] == "amd-epyc-avx2"
    assert "CPU kind: `amd-epyc-avx2`; flags: avx avx2 fma" in (tmp_path / "core-amd-epyc-avx2.md").read_text()
    assert run_core.main(["--models", "ModelB"]) == 0  # without --merge: a fresh table
    data = json.loads((tmp_path / "core-amd-epyc-avx2.json").read_text(encoding="utf-8"))
    assert [m["model"] for m in data["models"]] == ["ModelB"]


def test_op_profiles_are_taken_only_for_openvino_winners_that_missed(monkeypatch):
    import sys
    import types

    from hpi.bench.targets import TargetCheck

    run_core = load_script("run_core")
    rows = [{"model": m, "hpi_backend": b, "threads": 2} for m, b in
            [("A", "openvino[bf16]"), ("B", "openvino[fp32]"), ("C", "onnxruntime[fp32]"), ("D", "openvino[int8]")]]
    checks = [TargetCheck("A", 2.2, 3.5, "own", False, "missed"), TargetCheck("B", 2.0, 1.5, "floor", True, "met"),
              TargetCheck("C", 1.1, 1.5, "floor", False, "missed"), None]
    monkeypatch.setattr(run_core, "summary_rows", lambda benches: rows)
    monkeypatch.setattr(run_core, "target_checks", lambda benches, kind, peaks: checks)
    calls = []

    def fake_report(model, precision, threads, runs, repeats, heading, peaks):  # noqa: ANN001, ANN202
        calls.append((model, precision, threads, peaks))
        return f"{heading} {model} by op"

    monkeypatch.setitem(sys.modules, "op_profile", types.SimpleNamespace(report=fake_report))
    peaks = Peaks(2, {"fp32": 100.0, "bf16": 200.0}, 10.0, {})
    assert run_core.missed_target_profiles([], None, peaks, lambda message: None) == ["#### A by op"]
    assert calls == [("A", "bf16", 2, peaks)]  # the table's own roofs, not measured again
