"""hpi/bench.py: eval on a labelled dataset (real weights), the bench table, export, and their CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from hpi.bench import bench_model, evaluate, format_csv, format_json, format_markdown, read_dataset
from hpi.cache import EngineCache
from hpi.cli import main
from hpi.device import Device
from hpi.errors import InvalidInputError
from hpi.model import ModelSource
from tests.conftest import render_page


@pytest.fixture(scope="module")
def orientation_dataset(tmp_path_factory):
    """Rendered text pages rotated 0/90/180/270, in PaddleX's classification layout."""
    root = tmp_path_factory.mktemp("doc_ori_dataset")
    (root / "images").mkdir()
    labels = ["0", "90", "180", "270"]
    (root / "label.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(labels)))
    lines = []
    for seed in range(3):
        page = render_page(seed)
        for k in range(4):
            clockwise = (360 - 90 * k) % 360
            name = f"images/page{seed}_rot{clockwise}.png"
            cv2.imwrite(str(root / name), np.rot90(page, k))
            lines.append(f"{name} {labels.index(str(clockwise))}")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.realweights
def test_eval_normal_vs_high_performance_on_real_weights(orientation_dir, orientation_dataset, tmp_path):
    report = evaluate("PP-LCNet_x1_0_doc_ori", orientation_dataset, model_dir=str(orientation_dir),
                      device="cpu", hpi_config={"threads": 1}, cache_dir=str(tmp_path))
    assert report.samples == 12
    assert report.normal["top1"] == 1.0 and report.high_performance["top1"] == 1.0
    assert report.normal["top5"] == 1.0 and report.top1_agreement == 1.0
    assert report.normal["backend"].startswith("onnxruntime[fp32]")  # ONNX model: ORT is the reference


def test_eval_cli_prints_both_modes(orientation_dir, orientation_dataset, tmp_path, capsys):
    code = main(["eval", "--model", "PP-LCNet_x1_0_doc_ori", "--model-dir", str(orientation_dir),
                 "--dataset", str(orientation_dataset), "--threads", "1", "--cache-dir", str(tmp_path),
                 "--format", "json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 12 and out["top1_agreement"] == 1.0


def test_dataset_errors_name_the_line(tmp_path):
    with pytest.raises(InvalidInputError, match="val.txt is missing"):
        read_dataset(tmp_path)
    (tmp_path / "val.txt").write_text("a.jpg 0\nb.jpg\n")
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match=r"val.txt:2: expected 'path label'"):
        read_dataset(tmp_path)
    (tmp_path / "val.txt").write_text("missing.jpg 3\n")
    with pytest.raises(InvalidInputError, match=r"val.txt:1: .*missing.jpg does not exist"):
        read_dataset(tmp_path)


@pytest.fixture(scope="module")
def toy_bench(toy_dir, tmp_path_factory):
    return bench_model(ModelSource.from_path(toy_dir), Device("cpu"), batch_sizes=[1, 2], threads=[1],
                       budget_s=0.2, cache=EngineCache(tmp_path_factory.mktemp("cache")))


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


def test_bench_formats(toy_bench):
    md = format_markdown([toy_bench])
    assert "| ToyNet | user | 1 | 1 |" in md and "**winner**" in md and "p50 / p90 / p99" in md
    assert "end to end" in md
    rows = format_csv([toy_bench]).splitlines()
    assert rows[0].startswith("model,weights,device,threads,batch,candidate,status,p50_ms")
    assert len(rows) > 6
    data = json.loads(format_json([toy_bench]))
    assert data["summary"][0]["model"] == "ToyNet" and "machine" in data


def test_bench_cli_with_plot(toy_dir, tmp_path, capsys):
    plot = tmp_path / "bench.png"
    code = main(["bench", "--model", "ToyNet", "--model-dir", str(toy_dir), "--threads", "1", "--budget", "0.2",
                 "--fp32-only", "--no-stages", "--format", "csv", "--plot", str(plot),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    assert capsys.readouterr().out.startswith("model,weights")
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_export_cli_builds_and_selects(toy_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["export", "--model", "ToyNet", "--model-dir", str(toy_dir), "--threads", "1",
                 "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "high-performance mode for ToyNet on cpu" in out and "decision" in out and "onnx " in out
    kinds = {e.kind for e in EngineCache(cache).entries()}
    assert {"onnx", "openvino", "decision"} <= kinds
    assert main(["export", "--model", "ToyNet", "--model-dir", str(toy_dir), "--backends", "onnxruntime,tflite",
                 "--cache-dir", str(cache)]) == 2  # unknown backend: a clear error, exit 2
