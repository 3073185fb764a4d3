"""hpi/tune/report.py and hpi/tune/record.py on a synthetic record: the files, the table, the chosen point, and the
page in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from hpi.errors import InvalidConfigError
from hpi.tune import record as records
from hpi.tune import report
from hpi.tune.search import Deployment, Measurement, Point

BUDGET = 20.0


def synthetic_record(met: bool = True) -> dict:
    a = Deployment("onnxruntime", "fp32", 1, 2, 8, 2.0)
    b = Deployment("openvino", "bf16", 2, 1, 4, 1.0)
    ms = [Measurement(a, (Point(1, 90.0, 9.0, 7.0, 180, 0, 2.0), Point(2, 150.0, 14.0, 11.0, 300, 0, 2.0),
                          Point(4, 170.0, 26.0, 20.0, 340, 0, 2.0)), 9.0),
          Measurement(b, (Point(1, 110.0, 8.0, 6.0, 220, 0, 2.0), Point(2, 190.0, 12.0, 9.0, 380, 0, 2.0),
                          Point(4, 240.0, 18.5, 15.0, 480, 0, 2.0), Point(8, 250.0, 35.0, 30.0, 500, 0, 2.0)), 11.0),
          Measurement(Deployment("paddle", "fp32", 1, 2, 1, 0.0), (), 3.0, "the server exited with code 1")]
    chosen = ({"key": b.key, "met_budget": True, "concurrency": 4, "search_throughput_rps": 240.0,
               "search_latency_ms": 18.5, "throughput_rps": 236.0, "latency_ms": 18.9, "p50_ms": 15.2, "errors": 0,
               "confirmed_within_budget": True} if met else
              {"key": b.key, "met_budget": False, "closest_latency_ms": 8.0, "closest_concurrency": 1,
               "over_budget_ms": 7.5, "shortfall": "the closest was ..."})
    return {"kind": "hpi-tune", "version": 1, "target": "serve", "model": "PP-LCNet_x1_0", "backend": b.backend,
            "precision": b.precision, "deployment": b.deployment_dict(), "visualize": False, "loop_niceness": 0,
            "budget_ms": BUDGET if met else 0.5, "percentile": 99.0, "objective": "throughput",
            "measured_through": "hpi serve", "chosen": chosen,
            "search": {"method": "hill-climb over ordered knobs", "space_size": 210, "measured": 3,
                       "measured_now": 3, "stopped": "converged", "seconds": 40.0, "cores": 2, "small_space": True},
            "measurements": [m.to_dict() for m in ms], "key": {"cpu": "AMD EPYC"},
            "serve_command": "hpi serve --pipeline p.yaml --tuned tune.json --host 127.0.0.1 --port 8080"}


def test_the_table_marks_the_chosen_level_and_the_failure(tmp_path):
    rec = synthetic_record()
    files = report.write_report(rec, tmp_path)
    assert all(p.stat().st_size > 0 for p in files.values())
    rows = json.loads((tmp_path / "table.json").read_text())["rows"]
    assert len(rows) == 3 + 4 + 1
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["concurrency"] == 4 and chosen[0]["backend"] == "openvino"
    assert [r["within_budget"] for r in rows[:3]] == [True, True, False]
    assert rows[-1]["failure"] == "the server exited with code 1"
    md = (tmp_path / "report.md").read_text()
    assert "**chosen**" in md and "hpi serve --pipeline p.yaml --tuned tune.json" in md and "small" in md
    assert Image.open(tmp_path / "report.png").size[0] > 500
    page = (tmp_path / "report.html").read_text()
    assert 'id="chosen-point"' in page and 'id="budget-line"' in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert "<script" not in page


def test_an_unmet_budget_marks_the_closest_point(tmp_path):
    report.write_report(synthetic_record(met=False), tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert 'id="closest-point"' in page and 'id="chosen-point"' not in page
    assert not any(r["chosen"] for r in json.loads((tmp_path / "table.json").read_text())["rows"])


def test_the_record_reads_back_and_sets_hpi_serve_options(tmp_path):
    path = records.write_json(tmp_path / "tune.json", synthetic_record())
    rec = records.load_record(path)
    assert rec["deployment"]["preferred_batch_sizes"] == [2, 4]
    args = argparse.Namespace(tuned=str(path), use_hpip=False, backend=None, workers=1, threads=None, max_batch=8,
                              batch_window_ms=2.0, no_visualize=False, loop_niceness=None)
    records.apply_to_serve_args(args)
    assert (args.use_hpip, args.backend, args.precision, args.workers, args.threads, args.max_batch,
            args.batch_window_ms, args.no_visualize, args.loop_niceness) == (True, "openvino", "bf16", 2, 1, 4, 1.0,
                                                                             True, 0)
    from hpi.cli.common import hpi_config_values

    assert hpi_config_values(args) == {"backend": "openvino", "backend_config": {"precision": "bf16"}, "threads": 1}


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "hpi-decision"}, "not a tune record"),
    ({"version": 2}, "version 2"),
    ({"target": "k8s"}, "target 'k8s'"),
    ({"deployment": {"instances": 1}}, "lacks threads"),
    ({"backend": None}, "'backend' must be a string"),
])
def test_a_wrong_record_is_refused_with_what_was_found(tmp_path, change, message):
    path = records.write_json(tmp_path / "tune.json", synthetic_record() | change)
    with pytest.raises(InvalidConfigError, match=message):
        records.load_record(path)


def test_a_record_for_another_target_is_refused_by_serve(tmp_path):
    path = records.write_json(tmp_path / "tune.json", synthetic_record() | {"target": "triton"})
    with pytest.raises(InvalidConfigError, match="tuned for triton"):
        records.apply_to_serve_args(argparse.Namespace(tuned=str(path)))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_the_page_renders_in_a_headless_browser_with_the_chosen_point(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    report.write_report(synthetic_record(), out)
    url = (out / "report.html").as_uri()
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,1100", url)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.std() > 10  # not blank
    target = np.array([0xE6, 0x00, 0x7E])  # report.CHOSEN_COLOUR, found only in the chosen point
    near = np.abs(pixels - target).sum(axis=2) < 40
    assert near.sum() > 100, "the chosen point's colour is not in the screenshot"
    ys, xs = np.nonzero(near)
    assert ys.max() - ys.min() < 30 and xs.max() - xs.min() < 30  # one round mark, not scattered pixels
    dom = chromium(tmp_path, "--dump-dom", url).stdout
    assert 'id="chosen-point"' in dom and "openvino[bf16] 2x1t b4 w1" in dom
