"""What a PaddleDetection export means: one module per job (:mod:`.spec` the ``inference.yml``, :mod:`.prepare`
the image, :mod:`.postprocess` the outputs to boxes, :mod:`.run` the engine call). In short: its ``inference.yml``, how an image is prepared for
it, and how its outputs become boxes. :mod:`hpi.models.detection` runs it as a model; measured selection
(:mod:`hpi.selection.detection`) prepares and judges detector inputs and outputs with the same functions, without
importing the model layer (which imports the backend choice).

A PaddleDetection export carries an ``inference.yml`` (``infer_cfg``) with a top-level ``Preprocess`` list::

    arch: PicoDet                # "GFL" when post-processing (decode + NMS) is inside the graph
    draw_threshold: 0.5          # default score threshold of the results
    Preprocess:
    - {type: Resize, target_size: [800, 608], keep_ratio: false, interp: 2}
    - {type: NormalizeImage, is_scale: true, mean: [...], std: [...]}
    - {type: Permute}
    label_list: [text, title, ...]
    NMS: {score_threshold: 0.3, nms_threshold: 0.5, nms_top_k: 1000, keep_top_k: 100}
    fpn_stride: [8, 16, 32, 64]  # written when the head's outputs are exported undecoded

The graph takes ``image`` [N, 3, H, W] float32 and, when it has them, ``scale_factor`` [N, 2] = (resized_h /
original_h, resized_w / original_w) and ``im_shape`` [N, 2] = (resized_h, resized_w). Three output layouts exist,
and :func:`detect_rows` handles each:

* **NMS in the graph** (PaddleX's PP-ShiTuV2_det, any ``export.nms: true`` model): ``boxes`` [M, 6] rows of
  (class_id, score, x1, y1, x2, y2) in original-image pixels, grouped by image, and ``boxes_num`` [N].
* **decoded, without NMS** (``export.nms: false``): boxes [N, L, 4] and scores [N, C, L]; NMS runs here with
  :func:`multiclass_nms`, Paddle's ``multiclass_nms3`` (per class, then the best ``keep_top_k`` over all classes).
* **undecoded PicoDet heads** (``arch: PicoDet``, ``export.post_process: false``, e.g. the layout models): per
  stride, class scores [N, H*W, C] (already sigmoid) followed by box distributions [N, H*W, 4 * (reg_max + 1)].
  They are decoded here as PaddleDetection's deploy ``PicoDetPostProcess`` does: the best ``nms_top_k`` anchors
  per level, box sides as the expectation of a softmax over the bins times the stride around each cell centre,
  per class hard NMS over the 200 best candidates keeping at most ``keep_top_k`` (the same greedy :func:`nms`),
  boxes clipped to the resized image and divided by the scale factor.

Results are PaddleX's: ``{input_path, page_index, boxes: [{cls_id, label, score, coordinate}]}`` with
``coordinate`` = [xmin, ymin, xmax, ymax] in original-image pixels, clipped to the image, best score first.
"""

from hpi.boxes import nms
from hpi.models.detector_ops.postprocess import decode_picodet_heads, multiclass_nms, nms_per_class_hard
from hpi.models.detector_ops.prepare import PreparedImage, prepare_image, resized_shape, stack_images
from hpi.models.detector_ops.run import batchable, detect_rows
from hpi.models.detector_ops.spec import (
    IM_SHAPE_INPUT,
    IMAGE_INPUT,
    SCALE_FACTOR_INPUT,
    DetectionSpec,
    NmsSettings,
    NormalizeOp,
    PadStrideOp,
    PermuteOp,
    ResizeOp,
    is_number,
)

__all__ = [
    "IMAGE_INPUT", "IM_SHAPE_INPUT", "SCALE_FACTOR_INPUT", "DetectionSpec", "NmsSettings", "NormalizeOp", "PadStrideOp",
    "PermuteOp", "PreparedImage", "ResizeOp", "batchable", "decode_picodet_heads", "detect_rows", "is_number",
    "multiclass_nms", "nms", "nms_per_class_hard", "prepare_image", "resized_shape", "stack_images",
]
