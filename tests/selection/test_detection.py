"""hpi/selection/detection.py: a detector's reference inputs and post-NMS outputs, as selection passes them between
its processes."""

from __future__ import annotations

import numpy as np

from hpi.api import create_model
from hpi.models.detector_ops import DetectionSpec, detect_rows, prepare_image
from hpi.selection import detection, measure
from hpi.source import ModelSource
from tests.selection.conftest import INPUT, SEEDED_DET_NAME


def test_reference_inputs_are_the_photos_prepared_the_detectors_way(seeded_detector_dir):
    source = ModelSource.from_path(seeded_detector_dir)
    inputs = measure.reference_inputs(source)
    images = measure.reference_images()
    prepared = detection.prepared_images(inputs)
    assert len(prepared) == len(images) == 8 and inputs["names"][1] == "astronaut.jpg mirrored"
    expected = prepare_image(DetectionSpec.from_source(source), images[1][1])
    np.testing.assert_array_equal(prepared[1].image, expected.image)
    assert prepared[1].image.shape == (3, INPUT, INPUT)
    height, width = images[1][1].shape[:2]
    np.testing.assert_allclose(prepared[1].scale_factor, (INPUT / height, INPUT / width), rtol=1e-6)
    assert prepared[1].im_shape == (INPUT, INPUT) and float(inputs["draw_threshold"]) == 0.5


def test_written_detections_are_the_detectors_rows(seeded_detector_dir, tmp_path, engine_cache):
    source = ModelSource.from_path(seeded_detector_dir)
    inputs = measure.reference_inputs(source)
    detection.write_arrays(tmp_path / "inputs.npy", inputs)
    loaded = np.load(tmp_path / "inputs.npy")  # an .npz archive under the name selection gives it
    with create_model(SEEDED_DET_NAME, seeded_detector_dir, device="cpu", cache_dir=engine_cache) as det:
        detection.write_detections(det.engine, loaded, tmp_path / "out.npy")
        expected = detect_rows(det.spec, det.engine, detection.prepared_images(inputs))
        timed = detection.timed_call(det.engine, loaded, 3)()
    found = measure.load_outputs(tmp_path / "out.npy")
    assert found.names == tuple(n for n, _ in measure.reference_images()) and found.draw_threshold == 0.5
    assert all(len(r) for r in found.rows) and any((r[:, 1] > 0.5).sum() for r in found.rows)
    for rows, want in zip(found.rows, expected):
        np.testing.assert_array_equal(rows, want)
    assert len(timed) == 3
    np.testing.assert_array_equal(timed[0], expected[0])
