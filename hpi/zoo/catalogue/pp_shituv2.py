"""PP-ShiTuV2 catalogue: the mainbody detector and the feature extractor of PaddleX's image recognition pipeline.

The networks live in :mod:`hpi.zoo.nets.picodet` (PicoDet-LCNet x2.5) and :mod:`hpi.zoo.nets.pplcnetv2`
(``ShiTuRec``), imported only when a model is built; their seeding, PaddleX configs and writing in
:mod:`hpi.zoo.shituv2_seeding`, which each record names as its exporter. The detector's NMS settings are here
because they are part of the network (``multiclass_nms3`` runs inside the exported graph).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hpi.zoo.record import ZooModel
from hpi.zoo.shituv2_seeding import (
    DEFAULT_NMS,
    DET_INPUT_SIZE,
    DET_NAME,
    EMBEDDING_DIM,
    LABELS,
    REC_NAME,
)


def build_detector(*, nms: bool = True) -> Any:
    """PicoDet-LCNet x2.5 as PP-ShiTuV2_det, unseeded, in eval mode.

    ``nms=False`` leaves NMS out of the graph (any batch size; see :func:`hpi.models.detector_ops.multiclass_nms`).
    """
    from hpi.zoo.nets.picodet import PicoDet

    model = PicoDet(len(LABELS), nms=asdict(DEFAULT_NMS) if nms else None)
    model.eval()
    return model


def build_rec() -> Any:
    """PP-ShiTuV2_rec, unseeded, in eval mode (512-d embedding, not normalised)."""
    from hpi.zoo.nets.pplcnetv2 import ShiTuRec

    model = ShiTuRec(EMBEDDING_DIM)
    model.eval()
    return model


MODELS: list[ZooModel] = [
    ZooModel(
        name=DET_NAME,
        build=build_detector,
        extra={
            "interpolation": "BICUBIC",
            "inputs": {"image": [None, 3, DET_INPUT_SIZE, DET_INPUT_SIZE], "scale_factor": [None, 2]},
            "outputs": ("boxes", "boxes_num"),
            "labels": LABELS,
        },
        exporter="hpi.zoo.shituv2_seeding:export_detector",  # hpi.zoo.export.export_zoo_model writes no detectors
    ),
    ZooModel(
        name=REC_NAME,
        build=build_rec,
        extra={"embedding_dim": EMBEDDING_DIM},
        exporter="hpi.zoo.shituv2_seeding:export_rec",  # PaddleClas' exact inference.yml
    ),
]
