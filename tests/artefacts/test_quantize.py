"""hpi/artefacts/quantize.py: int8 models calibrated on a tiny set, on a seeded model and on a trained one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import hpi
from hpi.artefacts.quantize import (
    OPENVINO_INT8,
    first_and_last,
    openvino_settings,
    ort_settings,
    overflow_handling,
    quantize_onnx,
    quantize_openvino,
    recipe,
    seven_bit_weights,
)
from hpi.backends import get_backend
from hpi.cache import EngineCache
from hpi.calibration import calibration_set
from hpi.config import AccuracyGate
from hpi.device import Device
from hpi.errors import InvalidConfigError
from hpi.selection.gate import compare_outputs
from hpi.selection.measure import reference_inputs
from hpi.source import ModelSource
from tests.conftest import fake_cpu_flags, render_text_line

CPU = Device("cpu")


def test_first_and_last_follow_the_settings():
    ops = [("in", "Parameter"), ("stem", "Convolution"), ("c2", "Convolution"), ("fc", "MatMul"), ("sm", "Softmax")]
    assert first_and_last(ops, ("Convolution",), ("MatMul", "Convolution"), OPENVINO_INT8) == ["stem", "fc"]
    import dataclasses

    assert first_and_last(ops, ("Convolution",), ("MatMul",), dataclasses.replace(OPENVINO_INT8, keep_head=False)
                          ) == ["stem"]


@pytest.mark.slow
@pytest.mark.parametrize("quantize", [quantize_openvino, quantize_onnx])
def test_seeded_model_quantised_on_two_images(toy_dir, calibration_dir, tmp_path, quantize):
    source = ModelSource.from_path(toy_dir)
    cache = EngineCache(tmp_path / "cache")
    calib = calibration_set(calibration_dir)
    artefact = quantize(source, cache, calib)
    assert artefact.kind.endswith("-int8") and artefact.path.is_file()
    assert artefact.parts["calibration"] == calib.key()
    assert quantize(source, cache, calib).key == artefact.key  # the same set and settings: the cached artefact
    assert quantize(source, cache, calibration_set()).key != artefact.key  # another set: another artefact
    kinds = [e.kind for e in cache.entries()]
    assert kinds.count(artefact.kind) == 2 and not list((cache.root).glob("**/*.tmp*"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_int8_engine_runs_close_to_fp32_on_the_seeded_model(toy_dir, calibration_dir, tmp_path, backend):
    """Close, not equal: on seeded weights two images' calibration may flip a top-1 (the gate decides; a broken
    quantisation would agree on about one input in ten)."""
    source = ModelSource.from_path(toy_dir)
    cache = EngineCache(tmp_path / "cache")
    inputs = reference_inputs(source)
    with get_backend("paddle").engine(source, CPU, {"threads": 1}, cache) as ref_engine:
        ref = ref_engine.run(inputs)[0]
    config = {"precision": "int8", "threads": 1, "calibration_data": str(calibration_dir)}
    with get_backend(backend).engine(source, CPU, config, cache) as engine:
        out = engine.run(inputs)[0]
    acc = compare_outputs("classification", ref, out, "int8", AccuracyGate())
    assert acc.top1_agreement >= 0.75 and acc.min_cosine > 0.8
    assert acc.max_rel_error > 1e-4  # really int8: not fp32 under an int8 label
    with get_backend(backend).engine(source, CPU, {**config, "fold_preprocess": True}, cache) as folded:
        assert folded.input_dtypes[folded.input_names[0]] == np.uint8  # folding applies to the int8 model too


@pytest.mark.slow
@pytest.mark.realweights
@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_trained_text_direction_classifier_keeps_its_answers_in_int8(ocr_cls_dir, tmp_path, backend):
    """PaddleOCR's trained direction classifier, calibrated on four rendered text lines, still tells upright text
    from text turned 180 degrees in int8, with scores close to fp32's."""
    calib = tmp_path / "lines"
    calib.mkdir()
    for i, text in enumerate(("Calibration line", "int8 on VNNI", "quantised 2026", "PP-OCR text")):
        line = render_text_line(text)
        cv2.imwrite(str(calib / f"{i}.png"), line if i % 2 else np.ascontiguousarray(line[::-1, ::-1]))
    lines = [render_text_line(t) for t in ("Hello World 2026", "PaddleX inference", "hpi 0.1 fast")]
    inputs = lines + [np.ascontiguousarray(line[::-1, ::-1]) for line in lines]
    scores = {}
    for precision in ("fp32", "int8"):
        model = hpi.create_model("ch_ppocr_mobile_v2.0_cls", ocr_cls_dir, device="cpu", cache_dir=tmp_path / "c",
                                 hpi_config={"backend": backend, "backend_config": {"precision": precision},
                                             "calibration_data": str(calib)})
        results = list(model.predict(inputs))
        assert [r["label_names"][0] for r in results] == ["0"] * 3 + ["180"] * 3, precision
        scores[precision] = np.array([r["scores"][0] for r in results])
    # 8-bit weights moved these scores by under 0.05; 7-bit weights (AVX2 without VNNI: half the weight levels)
    # moved them by 0.082 with ONNX Runtime's reduce_range (HPI_MAX_CPU_ISA=avx2, 2026-12-07), answers all kept.
    assert np.abs(scores["int8"] - scores["fp32"]).max() < (0.1 if seven_bit_weights() else 0.05)
    assert np.abs(scores["int8"] - scores["fp32"]).max() > 0  # int8 really ran


@pytest.mark.slow
@pytest.mark.parametrize("quantize", [quantize_openvino, quantize_onnx])
def test_7_bit_weights_on_avx2_are_never_reused_on_a_cpu_with_vnni(toy_dir, calibration_dir, tmp_path, monkeypatch,
                                                                     quantize):
    """The overflow handling is a setting, so it is in the artefact's key: the model quantised with 7-bit weights
    for an AVX2-only CPU and the one with 8-bit weights for a VNNI CPU are two artefacts, each found again only by a
    CPU of its kind. Quantisation runs in this process, so faking the flags here reaches it."""
    source = ModelSource.from_path(toy_dir)
    cache = EngineCache(tmp_path / "cache")
    calib = calibration_set(calibration_dir)
    fake_cpu_flags(monkeypatch, keep=lambda f: not f.startswith(("avx512", "amx")) and f != "avx_vnni")
    avx2 = quantize(source, cache, calib)
    settings = avx2.parts["settings"]
    onnx_model = quantize is quantize_onnx
    assert settings["reduce_range"] is True if onnx_model else settings["overflow_fix"] == "enable"
    ranges = _int8_weight_ranges(avx2.path)
    # Really 7 bits: ONNX Runtime halves every weight's range; NNCF those of the layers its overflow fix covers.
    assert max(ranges) <= 64 if onnx_model else min(ranges) <= 64
    fake_cpu_flags(monkeypatch, add=("avx512f", "avx512_vnni"))
    vnni = quantize(source, cache, calib)
    assert vnni.key != avx2.key and vnni.parts["settings"] != settings
    assert min(_int8_weight_ranges(vnni.path)) > 64  # 8-bit weights use the whole range
    fake_cpu_flags(monkeypatch, keep=lambda f: not f.startswith(("avx512", "amx")) and f != "avx_vnni")
    assert quantize(source, cache, calib).key == avx2.key  # an AVX2 CPU finds its own artefact again
    assert [e.kind for e in cache.entries()].count(avx2.kind) == 2


def _int8_weight_ranges(path) -> list[int]:  # noqa: ANN001
    """The largest magnitude of each int8 weight tensor of an ONNX model or an OpenVINO IR."""
    import numpy as np

    if str(path).endswith(".onnx"):
        import onnx
        from onnx import numpy_helper

        tensors = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and t.dims]
    else:
        import openvino as ov

        tensors = [op.get_data() for op in ov.Core().read_model(str(path)).get_ordered_ops()
                   if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    return [int(np.abs(t.astype(np.int32)).max()) for t in tensors if t.ndim > 1]  # not the zero points


def test_the_overflow_handling_follows_the_cpu(monkeypatch):
    fake_cpu_flags(monkeypatch, keep=lambda f: not f.startswith(("avx512", "amx")) and f != "avx_vnni")
    assert openvino_settings().overflow_fix == "enable" and ort_settings().reduce_range
    avx2_recipe = recipe()
    fake_cpu_flags(monkeypatch, add=("avx512_vnni",))
    assert openvino_settings() == OPENVINO_INT8 and not ort_settings().reduce_range
    assert recipe() != avx2_recipe  # the decision key's int8 part differs too
    assert overflow_handling("paddle") == ""


def test_the_weight_bits_can_be_forced_for_measuring_and_say_so(monkeypatch):
    fake_cpu_flags(monkeypatch, add=("avx512_vnni",))
    monkeypatch.setenv("HPI_INT8_WEIGHT_BITS", "7")
    assert openvino_settings().overflow_fix == "enable" and ort_settings().reduce_range
    assert overflow_handling("onnxruntime").endswith("forced by HPI_INT8_WEIGHT_BITS=7")
    monkeypatch.setenv("HPI_INT8_WEIGHT_BITS", "6")
    with pytest.raises(InvalidConfigError, match="expected 7 or 8"):
        ort_settings()
