"""hpi/selection/decision.py: the cached decision, reused across processes and measured again when it must be."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import hpi
from hpi.artefacts import quantize
from hpi.cache import EngineCache
from hpi.config import HpiConfig
from hpi.device import Device
from hpi.selection import decision, measure, record
from hpi.source import ModelSource

CPU = Device("cpu")


def test_use_hpip_reuses_the_decision_across_processes(toy_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    model = hpi.create_model("ToyNet", toy_dir, device="cpu", use_hpip=True, hpi_config={"threads": 1},
                             cache_dir=cache_dir)
    assert model.choice.mode == "measured"
    decisions = EngineCache(cache_dir).entries()
    assert sum(e.kind == "decision" for e in decisions) == 1
    script = textwrap.dedent(f"""
        import time, hpi
        from hpi.selection import measure
        def boom(*a, **k):
            raise SystemExit("selection ran again instead of reusing the cached decision")
        measure.select = boom
        t = time.perf_counter()
        m = hpi.create_model("ToyNet", {str(toy_dir)!r}, device="cpu", use_hpip=True, hpi_config={{"threads": 1}},
                             cache_dir={str(cache_dir)!r})
        print(m.backend, m.choice.precision)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [model.backend, model.choice.precision]


def test_version_or_policy_change_measures_again(toy_dir, tmp_path, monkeypatch):
    source = ModelSource.from_path(toy_dir)
    cache = EngineCache(tmp_path)
    runs = []
    real_select = measure.select

    def counting_select(*args, **kwargs):
        runs.append(1)
        return real_select(*args, **{**kwargs, "isolate": False, "budget_s": 0.1})

    monkeypatch.setattr(measure, "select", counting_select)
    cfg = HpiConfig(threads=1)
    decision.cached_selection(source, CPU, cfg, cache=cache)
    decision.cached_selection(source, CPU, cfg, cache=cache)
    assert len(runs) == 1  # cached
    decision.cached_selection(source, CPU, HpiConfig(threads=1, allow_reduced_precision=False), cache=cache)
    assert len(runs) == 2  # precision policy changed
    real_versions = record.library_versions
    monkeypatch.setattr(record, "library_versions", lambda d: {**real_versions(d), "openvino": "9999.0"})
    decision.cached_selection(source, CPU, cfg, cache=cache)
    assert len(runs) == 3  # a library version changed
    assert sum(e.kind == "decision" for e in cache.entries()) == 3


@pytest.mark.slow
def test_a_changed_calibration_set_selects_again_and_the_record_names_it(toy_dir, tmp_path, monkeypatch,
                                                                        calibration_dir):
    source = ModelSource.from_path(toy_dir)
    cache = EngineCache(tmp_path / "cache")
    runs = []
    real_select = measure.select

    def counting_select(*args, **kwargs):
        runs.append(1)
        return real_select(*args, **{**kwargs, "isolate": False, "budget_s": 0.1, "rounds": 1})

    monkeypatch.setattr(measure, "select", counting_select)
    cfg = HpiConfig(threads=1, calibration_data=str(calibration_dir))
    first = decision.cached_selection(source, CPU, cfg, cache=cache)
    assert first.calibration.startswith(f"{calibration_dir} (2 images, ")
    int8 = {r.candidate.backend: r for r in first.results if r.candidate.precision == "int8"}
    assert set(int8) == {"onnxruntime", "openvino", "paddle"}
    assert int8["paddle"].status == "unavailable" and "PaddleSlim" in int8["paddle"].reason
    assert int8["openvino"].status != "unavailable" and int8["onnxruntime"].status != "unavailable"
    assert int8["openvino"].int8_overflow == quantize.overflow_handling("openvino") != ""
    assert record.SelectionRecord.from_dict(first.to_dict()).calibration == first.calibration
    decision.cached_selection(source, CPU, cfg, cache=cache)
    assert len(runs) == 1  # same set: cached
    (calibration_dir / "coffee.jpg").unlink()
    key = decision.decision_key(source, CPU, cfg, 1, cfg.gate())
    assert key["int8"]["calibration"]["images"] == 1
    again = decision.cached_selection(source, CPU, cfg, cache=cache)
    assert len(runs) == 2 and again.calibration.startswith(f"{calibration_dir} (1 images, ")
    off = HpiConfig(threads=1, calibration_data=str(calibration_dir), allow_reduced_precision=False)
    assert decision.decision_key(source, CPU, off, 1, off.gate())["int8"] is None


def test_the_int8_overflow_handling_is_in_the_decision_key(toy_dir, monkeypatch):
    """A decision made where int8 ran with 7-bit weights (AVX2 without VNNI) is never reused where it runs with
    8-bit weights: the int8 recipe in the key holds the overflow setting (and the device signature differs too)."""
    from tests.conftest import fake_cpu_flags

    source, cfg = ModelSource.from_path(toy_dir), HpiConfig(threads=1)
    fake_cpu_flags(monkeypatch, keep=lambda f: not f.startswith(("avx512", "amx")) and f != "avx_vnni")
    avx2 = decision.decision_key(source, CPU, cfg, 1, cfg.gate())
    assert avx2["int8"]["recipe"]["openvino"]["overflow_fix"] == "enable"
    assert avx2["int8"]["recipe"]["onnxruntime"]["reduce_range"] is True
    fake_cpu_flags(monkeypatch, add=("avx2", "avx512_vnni"))
    vnni = decision.decision_key(source, CPU, cfg, 1, cfg.gate())
    assert vnni["int8"]["recipe"]["openvino"]["overflow_fix"] == "disable" and vnni["int8"] != avx2["int8"]
