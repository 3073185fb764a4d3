"""PP-ShiTuV2 catalogue: the mainbody detector and the feature extractor of PaddleX's image recognition pipeline.

The networks live in :mod:`hpi.zoo.nets.picodet` (PicoDet-LCNet x2.5) and :mod:`hpi.zoo.nets.pplcnetv2`
(``ShiTuRec``); their seeding, PaddleX configs and writing in :mod:`hpi.zoo.shituv2_seeding`. Both are imported
only when a model is built.
"""

from __future__ import annotations

from typing import Any

from hpi.zoo.catalogue import ZooModel

DET_NAME = "PP-ShiTuV2_det"
REC_NAME = "PP-ShiTuV2_rec"
DET_INPUT_SIZE = 640
REC_INPUT_SIZE = 224
EMBEDDING_DIM = 512
LABELS = ("foreground",)


def _build_detector() -> Any:
    from hpi.zoo.shituv2_seeding import build_detector

    return build_detector()


def _build_rec() -> Any:
    from hpi.zoo.shituv2_seeding import build_rec

    return build_rec()


MODELS: list[ZooModel] = [
    ZooModel(
        name=DET_NAME,
        family="PP-ShiTuV2",
        build=_build_detector,
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
        build=_build_rec,
        task="embedding",
        input_size=REC_INPUT_SIZE,
        resize_short=None,
        extra={"embedding_dim": EMBEDDING_DIM},
        exporter="hpi.zoo.shituv2_seeding:export_rec",  # PaddleClas' exact inference.yml
    ),
]
