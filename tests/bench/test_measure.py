"""hpi/bench/measure.py: every candidate per run, and the stage split of both modes at batch 1."""

from __future__ import annotations

import pytest

from hpi.bench import bench_models
from hpi.device import Device
from hpi.errors import InvalidConfigError


def test_bench_measures_every_candidate_and_the_stage_split(toy_bench):
    assert [r["batch_size"] for r in toy_bench.runs] == [1, 2]
    for run in toy_bench.runs:
        rec = run["record"]
        assert rec.normal is not None and rec.winner.timing is not None
        assert rec.winner.timing.items_per_call == run["batch_size"]
    first, second = toy_bench.runs
    assert set(first["stages"]) == {"normal", "high-performance"} and "stages" not in second  # per image, batch 1
    for stage in ("decode", "preprocess", "inference", "postprocess", "end_to_end"):
        assert first["stages"]["normal"][stage]["p50_ms"] > 0


def test_a_model_directory_goes_with_a_single_model(toy_dir):
    with pytest.raises(InvalidConfigError, match="single model, got 2: ToyNet, Other"):
        next(bench_models(["ToyNet", "Other"], Device("cpu"), model_dir=str(toy_dir)))
