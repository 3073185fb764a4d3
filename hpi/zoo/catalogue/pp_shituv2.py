"""PP-ShiTuV2 catalogue: the mainbody detector and the feature extractor of PaddleX's image recognition pipeline.

The networks live in :mod:`hpi.zoo.nets.picodet` (PicoDet-LCNet x2.5) and :mod:`hpi.zoo.nets.pplcnetv2`
(``ShiTuRec``), imported only when a model is built; their seeding, PaddleX configs and writing in
:mod:`hpi.zoo.shituv2_seeding`, which each record names as its exporter. The detector's NMS settings are here
because they are part of the network (``multiclass_nms3`` runs inside the exported graph).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hpi.zoo.catalogue import ZooModel

DET_NAME = "PP-ShiTuV2_det"
REC_NAME = "PP-ShiTuV2_rec"
DET_INPUT_SIZE = 640
REC_INPUT_SIZE = 224
EMBEDDING_DIM = 512
LABELS = ("foreground",)


@dataclass(frozen=True)
class NmsConfig:
    """``multiclass_nms3`` settings, as PP-ShiTuV2_det's ``PicoHead.nms`` config sets them."""

    score_threshold: float = 0.025  # drop candidates scoring at or below this
    nms_top_k: int = 1000  # best candidates per class entering NMS (-1: all)
    keep_top_k: int = 100  # best boxes kept per image over all classes (-1: all)
    nms_threshold: float = 0.6  # IoU above which the lower-scoring box is suppressed
    normalized: bool = True  # IoU without the +1 pixel convention


DEFAULT_NMS = NmsConfig()


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
        family="PP-ShiTuV2",
        build=build_detector,
        task="detection",
        input_size=DET_INPUT_SIZE,
        resize_short=None,
        extra={
            "interpolation": "BICUBIC",
            "inputs": {"image": [None, 3, DET_INPUT_SIZE, DET_INPUT_SIZE], "scale_factor": [None, 2]},
            "outputs": ("boxes", "boxes_num"),
            "labels": LABELS,
        },
        exporter="hpi.zoo.shituv2_seeding:export_detector",  # hpi.zoo.seeding.export_zoo_model writes no detectors
    ),
    ZooModel(
        name=REC_NAME,
        family="PP-ShiTuV2",
        build=build_rec,
        task="embedding",
        input_size=REC_INPUT_SIZE,
        resize_short=None,
        extra={"embedding_dim": EMBEDDING_DIM},
        exporter="hpi.zoo.shituv2_seeding:export_rec",  # PaddleClas' exact inference.yml
    ),
]
