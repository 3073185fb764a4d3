"""int8 detectors: calibrated on images prepared the detector's way (image, scale_factor, im_shape), then run and
judged through the same path as every other detector candidate."""

from __future__ import annotations

import numpy as np
import pytest

from hpi.artefacts.quantize import calibration_samples, quantize_onnx, quantize_openvino
from hpi.backends import get_backend
from hpi.cache import EngineCache
from hpi.calibration import calibration_set
from hpi.config import HpiConfig
from hpi.device import Device
from hpi.models.detector_ops import DetectionSpec, detect_rows, prepare_image
from hpi.selection import measure
from hpi.source import ModelSource
from tests.selection.conftest import INPUT

CPU = Device("cpu")


def test_calibration_feeds_are_the_detectors_own_inputs(seeded_detector_dir, calibration_dir):
    source = ModelSource.from_path(seeded_detector_dir)
    calib = calibration_set(calibration_dir)
    feeds = calibration_samples(source, calib, ["image", "scale_factor"])
    assert len(feeds) == 2 and all(set(f) == {"image", "scale_factor"} for f in feeds)
    first = prepare_image(DetectionSpec.from_source(source), calib.images()[0])
    np.testing.assert_array_equal(feeds[0]["image"][0], first.image)
    assert feeds[0]["image"].shape == (1, 3, INPUT, INPUT) and feeds[0]["image"].dtype == np.float32
    np.testing.assert_allclose(feeds[0]["scale_factor"][0], first.scale_factor, rtol=1e-6)
    assert calibration_samples(source, calib, ["image", "im_shape", "scale_factor"])[1]["im_shape"].shape == (1, 2)


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "quantize"), [("openvino", quantize_openvino), ("onnxruntime", quantize_onnx)])
def test_an_int8_detector_is_built_and_finds_boxes(seeded_detector_dir, calibration_dir, tmp_path, backend, quantize):
    source = ModelSource.from_path(seeded_detector_dir)
    cache = EngineCache(tmp_path / "cache")
    artefact = quantize(source, cache, calibration_set(calibration_dir))
    assert artefact.kind.endswith("-int8") and artefact.parts["calibration"] == calibration_set(calibration_dir).key()
    spec = DetectionSpec.from_source(source)
    prepared = [prepare_image(spec, rgb) for _, rgb in measure.reference_images()]
    with get_backend("paddle").engine(source, CPU, {"threads": 1}, cache) as ref_engine:
        reference = detect_rows(spec, ref_engine, prepared)
    config = {"precision": "int8", "threads": 1, "calibration_data": str(calibration_dir)}
    with get_backend(backend).engine(source, CPU, config, cache) as engine:
        rows = detect_rows(spec, engine, prepared)
    assert len(rows) == len(reference) and all(r.shape[1] == 6 for r in rows)
    assert sum(len(r) for r in rows) > 0
    # Really int8: the scores move (fp32 reorderings move them by at most 3e-5 on this model).
    paired = [(r, ref) for r, ref in zip(rows, reference) if len(r) and len(r) == len(ref)]
    assert paired and max(float(np.abs(r[:, 1] - ref[:, 1]).max()) for r, ref in paired) > 1e-4


@pytest.mark.slow
def test_selection_measures_int8_detector_candidates(seeded_detector_dir, tmp_path):
    """int8 detector candidates are built, run and judged by the box gate like the others: passed or rejected on
    their boxes, never failed for want of calibration inputs."""
    record = measure.select(ModelSource.from_path(seeded_detector_dir), CPU, HpiConfig(threads=1),
                            cache=EngineCache(tmp_path), budget_s=0.1, isolate=False)
    int8 = {r.candidate.label: r for r in record.results if r.candidate.precision == "int8"}
    assert {"openvino[int8]", "onnxruntime[int8]"} <= set(int8)
    for label in ("openvino[int8]", "onnxruntime[int8]"):
        r = int8[label]
        assert r.status in ("winner", "passed", "rejected"), (label, r.reason)
        assert r.accuracy is not None and r.accuracy.boxes_compared > 0
    assert record.calibration.startswith("built-in photos")
