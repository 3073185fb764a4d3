"""hpi/selection/reduced_decode.py: reduced-scale JPEG decoding judged by the accuracy gate, never upsampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpi.backends import get_backend
from hpi.cache import EngineCache
from hpi.device import Device
from hpi.preprocess.decode import decode, jpeg_header
from hpi.preprocess.fused import REDUCED_DECODE_MARGIN, FusedPreprocessor
from hpi.selection.reduced_decode import PHONE_PHOTO, judge, photo_jpeg
from hpi.source import ModelSource


def test_a_phone_photo_is_12_mp_and_decodes_reduced_without_upsampling(photos, orientation_dir):
    spec = ModelSource.from_path(orientation_dir).spec.preprocess  # resize_short 256, crop 224
    assert spec.resize_short == 256
    data = photo_jpeg(photos["coffee"][:, :, ::-1])
    assert jpeg_header(data)[:2] == PHONE_PHOTO
    with FusedPreprocessor(spec, threads=1, reduced_decode=True) as kernel:
        done = kernel.process([data, photo_jpeg(photos["coffee"][:, :, ::-1], (500, 375))])
    assert done.reductions == (4, 1)  # 750 pixels >= 2 x 256; the 500x375 photo keeps its full decode  # the 500x375 photo keeps its full decode
    small = decode(data, "phone", min_size=math.ceil(spec.resize_short * REDUCED_DECODE_MARGIN))
    assert min(small.image.shape[:2]) >= spec.resize_short  # never below the resize target: no upsampling


@pytest.mark.slow
@pytest.mark.parametrize("fold", [False, True])
def test_the_gate_judges_reduced_decoding_on_the_engine_that_runs_it(orientation_dir, photos, tmp_path, fold):
    """The trained document-orientation classifier (PP-LCNet, from a wheel) on 12 MP JPEGs of real photos: the
    reduced decode is really used (1/4) and judged against the full one on the engine's own outputs."""
    source = ModelSource.from_path(orientation_dir)
    jpegs = [photo_jpeg(bgr[:, :, ::-1]) for bgr in photos.values()]
    config = {"threads": 1, "fold_preprocess": fold}
    with get_backend("onnxruntime").engine(source, Device("cpu"), config, EngineCache(tmp_path)) as engine:
        verdict = judge(source, engine, jpegs)
    assert verdict.images == len(jpegs) and set(verdict.reductions) == {4}
    assert verdict.accuracy.top1_agreement is not None and verdict.accuracy.min_cosine > 0.9
    assert verdict.passed == verdict.accuracy.passed and "4000x3000" in verdict.describe()
    assert np.isfinite(verdict.accuracy.max_rel_error) and verdict.accuracy.max_rel_error > 0  # pixels did change


@pytest.mark.slow
def test_high_performance_mode_uses_reduced_decoding_as_its_cached_verdict_says(orientation_dir, tmp_path):
    """create_model(use_hpip=True) asks the gate once (a "reduced-decode" cache entry), names the verdict in the
    choice's reason and gives the model the verdict; normal mode and hpi_config.reduced_decode=False never ask."""
    import hpi

    cache = EngineCache(tmp_path)
    config = {"backend": "onnxruntime"}
    with hpi.create_model("PP-LCNet_x1_0_doc_ori", orientation_dir, device="cpu", use_hpip=True, hpi_config=config,
                          cache_dir=tmp_path) as model:
        assert "reduced-scale decoding" in model.choice.reason
        passed = "reduced-scale decoding passed" in model.choice.reason
        assert model._preprocess.reduced_decode is passed
    assert [e.kind for e in cache.entries()].count("reduced-decode") == 1
    with hpi.create_model("PP-LCNet_x1_0_doc_ori", orientation_dir, device="cpu", use_hpip=True, hpi_config=config,
                          cache_dir=tmp_path) as again:  # the cached verdict, not a second judgement
        assert again._preprocess.reduced_decode is passed
    assert [e.kind for e in cache.entries()].count("reduced-decode") == 1
    off = tmp_path / "off"
    with hpi.create_model("PP-LCNet_x1_0_doc_ori", orientation_dir, device="cpu", use_hpip=True, cache_dir=off,
                          hpi_config={**config, "reduced_decode": False}) as model:
        assert not model._preprocess.reduced_decode and "reduced-scale" not in model.choice.reason
    with hpi.create_model("PP-LCNet_x1_0_doc_ori", orientation_dir, device="cpu", cache_dir=off) as normal:
        assert not normal._preprocess.reduced_decode
    assert "reduced-decode" not in [e.kind for e in EngineCache(off).entries()]
