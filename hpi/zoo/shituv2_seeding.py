"""Seeding and writing PP-ShiTuV2's detector and feature extractor as PaddleX writes them.

The records are in :mod:`hpi.zoo.catalogue.pp_shituv2`, the networks in :mod:`hpi.zoo.nets.picodet` and
:mod:`hpi.zoo.nets.pplcnetv2` (imported only when a model is built). This module holds PaddleX's
``inference.yml`` for both, the detector's seeding and both exporters.

``PP-ShiTuV2_det`` (PicoDet-LCNet x2.5, one class "foreground") is exported as PaddleX exports PaddleDetection
models with ``export.post_process`` and ``export.nms`` on:

* inputs ``image`` [N, 3, 640, 640] float32 (resized without keeping the aspect ratio, bicubic, ImageNet
  mean/std, CHW) and ``scale_factor`` [N, 2] float32 = (640 / original height, 640 / original width). There is
  no ``im_shape`` input: PaddleDetection prunes it from the export because PicoDet never reads it.
* outputs, in this order: boxes [M, 6] float32 rows (class_id, score, x1, y1, x2, y2) in original-image pixels,
  grouped by image; boxes_num [N] int32. In the Paddle program they are named ``fetch_name_0`` and
  ``fetch_name_1``; PaddleX takes them by position.
* the decoding, the division by ``scale_factor`` and ``multiclass_nms3`` (score > 0.025, 1000 candidates,
  IoU 0.6, 100 kept) are inside the graph. paddle2onnx 2.1 converts the NMS at opset 17, but the ONNX graph it
  writes is valid for batch 1 only. :func:`hpi.models.detector_ops.multiclass_nms` reproduces the op in numpy for
  the NMS-free network
  (:func:`hpi.zoo.catalogue.pp_shituv2.build_detector` with ``nms=False``), which takes any batch.

``PP-ShiTuV2_rec`` outputs the raw 512-d embedding; its ``inference.yml`` asks for ``NormalizeFeatures`` (L2
normalisation after the network), which makes :class:`hpi.source.ModelSpec` read it as an embedding model. It is
seeded like the classifiers (:func:`hpi.zoo.seeding.seed_weights`); :func:`export_rec` writes PaddleClas' exact
config, :func:`hpi.zoo.export.export_zoo_model` an equivalent generic one.

Seeded detector weights need more than seeding gives a classifier: with random weights every anchor scores
near the 0.01 class prior and no box is ever drawn, and with the usual BatchNorm scales this deep residual-free
network is chaotic (backends would disagree on its boxes). :func:`seed_detector` handles both, so that with
seed 0 scikit-image's astronaut and coffee get 16 and 13 boxes above 0.5 and Paddle Inference and ONNX Runtime
agree on the boxes to 1e-3 pixels. Other natural photos get 0-20 boxes; images with strong global contrast
unlike the calibration photos (scikit-image's colorwheel or page, an RGB photo fed as BGR) saturate at the 100
boxes NMS keeps: scores grow with contrast, as nothing was trained to bound them. Each record names its
exporter in ``ZooModel.exporter`` (:func:`export_detector`, :func:`export_rec`):
:func:`hpi.zoo.export.export_zoo_model` refuses detectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpi.errors import ExportError
from hpi.preprocess.spec import IMAGENET_MEAN, IMAGENET_STD
from hpi.zoo.record import ZooModel

if TYPE_CHECKING:
    from hpi.preprocess.spec import PreprocessSpec
    from hpi.zoo.seeding import SeedReport

FPN_STRIDES = (8, 16, 32, 64)
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
MEAN = IMAGENET_MEAN
STD = IMAGENET_STD
DRAW_THRESHOLD = 0.5  # PaddleX keeps boxes scoring above this



# Share of anchors (per level, over all calibration photos) that seed_detector lifts to SEED_TOP_LOGIT.
SEED_TOP_FRACTION = 0.0005
SEED_TOP_LOGIT = 0.5  # class logit at that quantile: score 0.62
SEED_CLASS_SPREAD = 2.0  # standard deviation of the class logits over anchors: top scores are decisive
SEED_REG_SPREAD = 1.0  # standard deviation of the box-bin logits: box sizes vary


# ---------------------------------------------------------------------------------------------------------------
# inference.yml as PaddleX writes it


def det_preprocess_spec() -> PreprocessSpec:
    """The detector's input pipeline: resize to 640 x 640 (bicubic, aspect not kept), ImageNet mean/std, CHW."""
    from hpi.preprocess.spec import PreprocessSpec

    return PreprocessSpec(
        resize_short=None,
        resize_to=(DET_INPUT_SIZE, DET_INPUT_SIZE),
        interpolation="BICUBIC",
        crop=None,
        mean=MEAN,
        std=STD,
        scale=1.0 / 255.0,
        channels_first=True,
    )


def det_scale_factor(height: int, width: int, size: int = DET_INPUT_SIZE) -> np.ndarray:
    """The ``scale_factor`` input for an original image of ``height`` x ``width``: (size / h, size / w)."""
    return np.array([size / height, size / width], dtype=np.float32)


def det_inference_config(model_name: str = DET_NAME, nms: NmsConfig = DEFAULT_NMS) -> dict[str, Any]:
    """PaddleDetection's exported config for PicoDet with post-processing and NMS in the graph.

    PaddleDetection writes ``arch: GFL`` (not PicoDet) when post-processing is exported, and records lowered NMS
    thresholds (0.3 / 0.5) for deployment that the graph does not use; PaddleX reads ``Preprocess``,
    ``draw_threshold`` and ``label_list`` only. A top-level ``Preprocess`` list is what makes
    :class:`hpi.source.ModelSpec` treat the model as a detector.
    """
    return {
        "mode": "paddle",
        "draw_threshold": DRAW_THRESHOLD,
        "metric": "COCO",
        "use_dynamic_shape": False,
        "Global": {"model_name": model_name},
        "arch": "GFL",
        "min_subgraph_size": 3,
        "Preprocess": [
            {
                "interp": 2,
                "keep_ratio": False,
                "target_size": [DET_INPUT_SIZE, DET_INPUT_SIZE],
                "type": "Resize",
            },
            {"is_scale": True, "mean": list(MEAN), "std": list(STD), "type": "NormalizeImage"},
            {"type": "Permute"},
        ],
        "label_list": list(LABELS),
        "NMS": {
            "keep_top_k": nms.keep_top_k,
            "name": "MultiClassNMS",
            "nms_threshold": 0.5,
            "nms_top_k": nms.nms_top_k,
            "score_threshold": 0.3,
        },
        "fpn_stride": list(FPN_STRIDES),
    }


def rec_inference_config(model_name: str = REC_NAME) -> dict[str, Any]:
    """PaddleClas' exported config for PP-ShiTuV2_rec: its eval query transforms and ``NormalizeFeatures``."""
    return {
        "Global": {"model_name": model_name},
        "PreProcess": {
            "transform_ops": [
                {
                    "ResizeImage": {
                        "size": [REC_INPUT_SIZE, REC_INPUT_SIZE],
                        "return_numpy": False,
                        "interpolation": "bilinear",
                        "backend": "cv2",
                    }
                },
                {
                    "NormalizeImage": {
                        "scale": 1.0 / 255.0,
                        "mean": list(MEAN),
                        "std": list(STD),
                        "order": "hwc",
                        "channel_num": 3,
                    }
                },
                {"ToCHWImage": None},
            ]
        },
        "PostProcess": {"NormalizeFeatures": None},
    }


# ---------------------------------------------------------------------------------------------------------------
# building, seeding and exporting


def _randomize_norm_affine_gently(layer: Any, rng: np.random.Generator) -> None:
    """BatchNorm scale from U(0.1, 0.2) and shift from N(0, 0.05): hard-swish then works near its linear part.

    With the scales every other zoo network gets (U(0.5, 1.5), see :func:`hpi.zoo.seeding.randomize_norm_affine`)
    the ~60 plain (residual-free) layers of this detector are chaotic: a 1e-6 relative change of the input moves
    the class logits by ~1e-2 of their spread, so two correct backends would disagree on scores and boxes.
    These scales bring that down to ~5e-5, like the classifiers.
    """
    from paddle import nn

    for sub in layer.sublayers(include_self=True):
        if isinstance(sub, nn.layer.norm._BatchNormBase):
            n = sub.weight.shape[0]
            sub.weight.set_value(rng.uniform(0.1, 0.2, n).astype(np.float32))
            sub.bias.set_value(rng.normal(0.0, 0.05, n).astype(np.float32))


def seed_detector(layer: Any, *, seed: int = 0) -> SeedReport:
    """Seed a :func:`~hpi.zoo.catalogue.pp_shituv2.build_detector` network so that it draws a few confident boxes on real photos.

    1. Random BatchNorm scale and shift (small, see :func:`_randomize_norm_affine_gently`), then every
       BatchNorm's running statistics calibrated on the calibration photos
       (:func:`hpi.zoo.seeding.calibrate_batchnorm`).
    2. Per level, the class weights are made orthogonal to the directions in which the photos' *average*
       features differ, so that a score depends on where in a photo an anchor is rather than on which photo it
       is (otherwise one photo gets every box); then they are scaled so that class logits spread by
       ``SEED_CLASS_SPREAD``, and the class bias set so that the best ``SEED_TOP_FRACTION`` of anchors reach
       ``SEED_TOP_LOGIT``. Box-bin weights are scaled to spread by ``SEED_REG_SPREAD``, so box sizes vary.

    Args:
        layer: the network (its weights are changed in place; eval mode on return).
        seed: seeds every random draw; build the network under the same seed (:func:`export_detector` does).
    """
    import paddle

    from hpi.preprocess.reference import preprocess_batch
    from hpi.zoo.nets.picodet import DenseLogits
    from hpi.zoo.seeding import SeedReport, calibrate_batchnorm, calibration_images

    rng = np.random.default_rng(seed)
    images, calibration = calibration_images(seed)
    batch = preprocess_batch(det_preprocess_spec(), images)
    _randomize_norm_affine_gently(layer, rng)
    calibrate_batchnorm(DenseLogits(layer), batch)

    head = layer.head
    k = head.num_classes
    with paddle.no_grad():
        feats = layer.features(paddle.to_tensor(batch))
        towers = [head.towers[i](f).numpy().astype(np.float64) for i, f in enumerate(feats)]
    for predictor, tower in zip(head.predictors, towers, strict=True):
        n, c = tower.shape[:2]
        anchors = tower.transpose(0, 2, 3, 1).reshape(-1, c)  # one row per anchor of every photo
        weight = predictor.weight.numpy().reshape(-1, c).astype(np.float64)

        photo_means = tower.mean(axis=(2, 3))
        basis = np.linalg.svd(photo_means - photo_means.mean(axis=0), full_matrices=False)[2][: n - 1]
        cls_w = weight[:k] - (weight[:k] @ basis.T) @ basis
        cls = anchors @ cls_w.T
        cls_w *= SEED_CLASS_SPREAD / max(float(cls.std()), 1e-12)
        cls = anchors @ cls_w.T
        reg_w = weight[k:] * SEED_REG_SPREAD / max(float((anchors @ weight[k:].T).std()), 1e-12)

        bias = np.zeros(weight.shape[0])
        bias[:k] = SEED_TOP_LOGIT - np.quantile(cls, 1.0 - SEED_TOP_FRACTION, axis=0)
        predictor.weight.set_value(
            np.concatenate([cls_w, reg_w]).reshape(predictor.weight.shape).astype(np.float32)
        )
        predictor.bias.set_value(bias.astype(np.float32))
    layer.eval()
    return SeedReport(seed, calibration, None, ())


def _det_input_spec() -> list[Any]:
    import paddle

    return [
        paddle.static.InputSpec([None, 3, DET_INPUT_SIZE, DET_INPUT_SIZE], "float32", "image"),
        paddle.static.InputSpec([None, 2], "float32", "scale_factor"),
    ]


def export_detector(
    model: ZooModel,
    directory: Path,
    *,
    seed: int = 0,
    on_built: Callable[[Any], None] | None = None,
) -> SeedReport:
    """Build PP-ShiTuV2_det with seeded weights and write it as a PaddleX inference directory.

    Writes ``inference.json`` + ``inference.pdiparams`` (``paddle.jit.save``, inputs ``image`` and
    ``scale_factor``) and ``inference.yml`` (:func:`det_inference_config`). Same signature as
    :func:`hpi.zoo.export.export_zoo_model`, which does not write detectors.

    Args:
        model: the detector's zoo record.
        directory: an existing, empty directory.
        seed: seed for every random draw.
        on_built: called with the seeded network before it is saved.

    Raises:
        ExportError: ``paddle.jit.save`` failed.
    """
    import paddle
    import yaml

    from hpi.zoo.seeding import build_seeded

    directory = Path(directory)
    with paddle.utils.unique_name.guard():  # parameter names (so the files) must not depend on earlier builds
        layer = build_seeded(model, seed)
        report = seed_detector(layer, seed=seed)
        if on_built is not None:
            on_built(layer)
        try:
            paddle.jit.save(layer, str(directory / "inference"), input_spec=_det_input_spec())
        except Exception as exc:  # Paddle raises many kinds; wrap at the boundary
            raise ExportError(f"paddle.jit.save failed for {model.name}: {exc}") from exc
    with open(directory / "inference.yml", "w", encoding="utf-8") as fh:
        yaml.safe_dump(det_inference_config(model.name), fh, sort_keys=False, allow_unicode=True)
    return report


def export_rec(
    model: ZooModel,
    directory: Path,
    *,
    seed: int = 0,
    on_built: Callable[[Any], None] | None = None,
) -> SeedReport:
    """Build PP-ShiTuV2_rec with seeded weights and write it with PaddleX's exact ``inference.yml``.

    Seeding is :func:`hpi.zoo.seeding.seed_weights` (as for every zoo network); only the config differs from
    :func:`hpi.zoo.export.export_zoo_model`'s generic one (:func:`rec_inference_config` keeps PaddleClas' keys).
    """
    import paddle

    from hpi.zoo.export import save_inference_model
    from hpi.zoo.seeding import build_seeded, preprocess_spec, seed_weights

    with paddle.utils.unique_name.guard():
        layer = build_seeded(model, seed)
        report = seed_weights(layer, preprocess_spec(model), seed=seed, task="embedding")
        if on_built is not None:
            on_built(layer)
        save_inference_model(
            layer, Path(directory), input_size=model.input_size, config=rec_inference_config(model.name)
        )
    return report
