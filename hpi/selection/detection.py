"""Detectors under measured selection: reference inputs prepared the detector's own way, and each candidate's
post-NMS boxes, run and timed through the one detection path (:func:`hpi.models.detector_ops.detect_rows`).

:mod:`hpi.selection.measure` hands detectors to this module (its parent process for the inputs and outputs, the
measuring child for running a candidate); :func:`hpi.selection.gate.compare_detections` judges the boxes.
Inputs and outputs cross the process boundary as ``.npz`` archives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpi.backends.base import Engine
from hpi.config import AccuracyGate
from hpi.models.detector_ops import DetectionSpec, PreparedImage, detect_rows, prepare_image
from hpi.selection.gate import Detections, reproducible_images
from hpi.source import ModelSource

_NAMES, _THRESHOLD, _IMAGE, _IM_SHAPE, _SCALE = "names", "draw_threshold", "image", "im_shape", "scale_factor"


def reference_inputs(source: ModelSource, images: Sequence[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The named RGB ``images`` prepared as the detector prepares them (its ``inference.yml`` ``Preprocess``):
    the image tensors with every image's ``im_shape`` and ``scale_factor`` (the extra inputs detectors take), the
    names and the model's ``draw_threshold``. Images keep their own sizes where the spec keeps the aspect ratio."""
    spec = DetectionSpec.from_source(source)
    prepared = [prepare_image(spec, rgb) for _, rgb in images]
    out = {_NAMES: np.array([name for name, _ in images]), _THRESHOLD: np.float64(spec.draw_threshold),
           _IM_SHAPE: np.array([p.im_shape for p in prepared], np.float32),
           _SCALE: np.array([p.scale_factor for p in prepared], np.float32)}
    for i, p in enumerate(prepared):  # one array per image: aspect-kept resizing gives each its own shape
        out[f"{_IMAGE}{i}"] = p.image
    return out


def write_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``arrays`` as an ``.npz`` archive at exactly ``path`` (``np.load`` tells it from an ``.npy`` by content)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def prepared_images(inputs: Mapping[str, np.ndarray]) -> list[PreparedImage]:
    """The :class:`~hpi.models.detector_ops.PreparedImage` list that :func:`reference_inputs` wrote."""
    shapes, scales = inputs[_IM_SHAPE], inputs[_SCALE]
    return [PreparedImage(inputs[f"{_IMAGE}{i}"], (float(shapes[i][0]), float(shapes[i][1])),
                          (float(scales[i][0]), float(scales[i][1]))) for i in range(len(shapes))]


def write_detections(engine: Engine, inputs: Mapping[str, np.ndarray], path: str | Path) -> None:
    """Run the detector on every reference image and write its post-NMS rows to ``path`` (read back with
    :func:`read_detections`)."""
    spec = DetectionSpec.from_source(engine.source)
    rows = detect_rows(spec, engine, prepared_images(inputs))
    write_arrays(path, {"rows": np.concatenate(rows).astype(np.float32),
                        "counts": np.array([len(r) for r in rows], np.int64),
                        _NAMES: inputs[_NAMES], _THRESHOLD: inputs[_THRESHOLD]})


def read_detections(archive: Mapping[str, np.ndarray]) -> Detections:
    """The :class:`~hpi.selection.gate.Detections` that :func:`write_detections` wrote."""
    bounds = np.concatenate([[0], np.cumsum(archive["counts"])])
    rows = archive["rows"]
    return Detections(tuple(rows[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)),
                      tuple(str(n) for n in archive[_NAMES]), float(archive[_THRESHOLD]))


def timed_call(engine: Engine, inputs: Mapping[str, np.ndarray], batch_size: int) -> Callable[[], Any]:
    """What selection times for a detector: ``batch_size`` reference images (repeated as needed) from prepared
    tensors to post-NMS boxes, the path a user's call takes after preprocessing (decoding the heads and NMS
    outside the graph included; one engine call per image where the graph takes one)."""
    spec = DetectionSpec.from_source(engine.source)
    prepared = prepared_images(inputs)
    batch = [prepared[i % len(prepared)] for i in range(batch_size)]
    return lambda: detect_rows(spec, engine, batch)


def judge_reproducible(measured: list[tuple[Any, ...]], variant: Detections, gate: AccuracyGate
                       ) -> tuple[list[tuple[Any, ...]], str]:
    """Every measured candidate's detections (``measured[i][1]``; the reference's first) cut to the images on which
    the reference's fp32 reordering ``variant`` reproduces its boxes (:func:`hpi.selection.gate.reproducible_images`),
    and a note for the record naming the images left out."""
    reference = measured[0][1]
    kept = reproducible_images(reference, variant, gate)
    if not kept:  # nothing to judge on: every image is kept, and only the reference itself passes
        return measured, (f"fp32 reordering changes the boxes on every one of the {len(reference.names)} images: "
                          "judged on all of them, so only the reference passes")
    why = "boxes differ under fp32 reordering"
    out = [(m[0], m[1].only(kept, why), *m[2:]) for m in measured]
    cut = out[0][1].not_judged
    return out, (f"box gate judged {len(kept)} of {len(reference.names)} images; not judged: {cut}" if cut
                 else f"box gate judged all {len(kept)} images (fp32 reordering reproduces their boxes)")
