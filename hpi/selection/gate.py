"""The accuracy gate: a candidate's outputs against the fp32 reference's, on the reference inputs: scores and
rankings for classifiers and embedders, box agreement (:func:`compare_detections`) for detectors."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpi.boxes import iou
from hpi.config import AccuracyGate
from hpi.errors import HpiInternalError
from hpi.selection.candidates import Candidate


@dataclass(frozen=True)
class Accuracy:
    """How a candidate's outputs compare with the reference's."""

    top1_agreement: float | None  # classification only
    top5_overlap: float | None  # classification only
    max_abs_error: float  # detection: the largest score change of a matched box
    max_rel_error: float  # detection: that change over the largest reference score
    min_cosine: float | None  # None for detection
    passed: bool
    why: str  # which threshold failed, or "within thresholds"
    box_recall: float | None = None  # detection: the worst image's share of counted reference boxes reproduced
    box_precision: float | None = None  # detection: the worst image's share of counted candidate boxes matched
    min_box_iou: float | None = None  # detection: the lowest IoU of a matched pair with a counted box
    boxes_compared: int | None = None  # detection: counted reference boxes over all images


@dataclass(frozen=True, eq=False)
class Detections:
    """A detector's post-NMS output on the reference images (:func:`hpi.models.detector_ops.detect_rows`)."""

    rows: tuple[np.ndarray, ...]  # per image [K, 6] rows (class_id, score, x1, y1, x2, y2), original-image pixels
    names: tuple[str, ...]  # the reference images, as the verdict names them
    draw_threshold: float  # the model's default score threshold (inference.yml draw_threshold)
    not_judged: str = ""  # images left out (:func:`reproducible_images`) and why, for the verdict

    def only(self, names: Sequence[str], why: str) -> Detections:
        """These detections on ``names`` only; the others are named in ``not_judged`` with ``why``."""
        left = [n for n in self.names if n not in names]
        keep = [i for i, n in enumerate(self.names) if n in names]
        return Detections(tuple(self.rows[i] for i in keep), tuple(self.names[i] for i in keep),
                          self.draw_threshold, f"{', '.join(left)} ({why})" if left else "")


def relative_error(reference: np.ndarray, output: np.ndarray) -> float:
    """The largest absolute difference divided by the largest absolute reference value (same shapes)."""
    ref, out = reference.astype(np.float64), output.astype(np.float64)
    return float(np.abs(out - ref).max()) / max(float(np.abs(ref).max()), 1e-12)


def fp32_bound(gate: AccuracyGate, spread: float | None) -> float:
    """The fp32 relative-error bound for a model whose reference, run twice with other kernels and threads,
    differed by ``spread``: ``max(floor, factor x spread)`` capped (see :class:`~hpi.config.AccuracyGate`); the
    floor when the spread could not be measured."""
    if spread is None:
        return gate.max_rel_error_fp32
    return max(gate.max_rel_error_fp32, min(gate.max_rel_error_fp32_cap, gate.fp32_spread_factor * spread))


def compare_outputs(task: str, reference: np.ndarray | Detections, output: np.ndarray | Detections, precision: str,
                    gate: AccuracyGate, *, max_rel_fp32: float | None = None) -> Accuracy:
    """Gate ``output`` against ``reference`` (both [N, ...] float arrays of the model's first output, or a
    detector's :class:`Detections`, judged by :func:`compare_detections`). ``max_rel_fp32`` replaces
    ``gate.max_rel_error_fp32`` for fp32 outputs (the model's adaptive bound; not used for detectors)."""
    if isinstance(reference, Detections) or isinstance(output, Detections):
        if task != "detection" or not (isinstance(reference, Detections) and isinstance(output, Detections)):
            raise HpiInternalError(f"a {task} model's outputs compared as detections (or the other way round)")
        return compare_detections(reference, output, precision, gate)
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = output.reshape(len(output), -1).astype(np.float64)
    if ref.shape != out.shape:
        return Accuracy(None, None, float("inf"), float("inf"), -1.0, False,
                        f"output shape {out.shape} != {ref.shape}")
    abs_err = float(np.abs(out - ref).max())
    rel_err = relative_error(ref, out)
    cos = np.sum(ref * out, 1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-12)
    min_cos = float(cos.min())
    reduced = precision != "fp32"
    int8 = precision == "int8"
    failures = []
    top1 = top5 = None
    if int8:
        max_rel = gate.max_rel_error_int8
    elif reduced:
        max_rel = gate.max_rel_error_reduced
    else:
        max_rel = gate.max_rel_error_fp32 if max_rel_fp32 is None else max_rel_fp32
    if max_rel is not None and rel_err > max_rel:
        failures.append(f"relative error {rel_err:.2e} > {max_rel:.2e}")
    if task == "classification":
        k = min(5, ref.shape[1])
        top1 = float((ref.argmax(1) == out.argmax(1)).mean())
        ref_top = np.argsort(-ref, axis=1, kind="stable")[:, :k]
        out_top = np.argsort(-out, axis=1, kind="stable")[:, :k]
        top5 = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, out_top)]))
        min_top1 = gate.min_top1_agreement_int8 if int8 else gate.min_top1_agreement
        min_top5 = gate.min_top5_overlap_int8 if int8 else gate.min_top5_overlap
        if top1 < min_top1:
            failures.append(f"top-1 agreement {top1:.3f} < {min_top1}")
        if top5 < min_top5:
            failures.append(f"top-5 overlap {top5:.3f} < {min_top5}")
    # int8 rounds every activation: its rows must also point the way the reference's do, whatever the task.
    if int8 or task != "classification":
        min_required = gate.min_cosine_int8 if int8 else gate.min_cosine_reduced if reduced else gate.min_cosine_fp32
        if min_cos < min_required:
            failures.append(f"cosine {min_cos:.5f} < {min_required}")
    why = "; ".join(failures) if failures else "within thresholds"
    return Accuracy(top1, top5, abs_err, rel_err, min_cos, not failures, why)


def trusted_reference(task: str, outputs: Sequence[tuple[Candidate, np.ndarray | Detections]], gate: AccuracyGate
                      ) -> tuple[np.ndarray | Detections, str | None]:
    """The reference output the gate compares against: the fp32 reference candidate's (``outputs[0]``), unless
    every other fp32 backend agrees with the others and not with it. Then the reference backend is the one that is
    wrong (seen here: Paddle Inference with oneDNN on ConvNeXt's channel LayerNorm), and the agreeing backends'
    output becomes the reference; the note says so in the record. Judged with the fixed fp32 floor: a wrong
    reference makes its own measured spread meaningless."""
    ref_cand, ref_out = outputs[0]
    others = [(c, out) for c, out in outputs[1:] if c.precision == "fp32"]
    if len(others) < 2 or compare_outputs(task, ref_out, others[0][1], "fp32", gate).passed:
        return ref_out, None
    agree = all(compare_outputs(task, others[0][1], out, "fp32", gate).passed for _, out in others[1:])
    disagree = not any(compare_outputs(task, ref_out, out, "fp32", gate).passed for _, out in others)
    if agree and disagree:
        names = ", ".join(c.label for c, _ in others)
        return others[0][1], f"{ref_cand.label} disagrees with {names}, which agree with each other: they are the reference"
    return ref_out, None


def match_boxes(reference: np.ndarray, output: np.ndarray, min_iou: float) -> list[tuple[int, int, float]]:
    """One-to-one matching of two images' detection rows (class_id, score, x1, y1, x2, y2), greedy by score: the
    reference rows best score first, each taking the not yet matched output row of the same class with the
    highest IoU, if that IoU is at least ``min_iou``. Returns (reference row, output row, IoU) triples.

    Greedy is not the optimal assignment; it is what COCO evaluation does, and on boxes that agree (the case the
    gate must accept) every reference box's best partner is unambiguous. IoU takes the +1 pixel convention (boxes
    are in image pixels), so that a zero-width box, which seeded detectors emit, still matches itself."""
    taken = np.zeros(len(output), dtype=bool)
    pairs = []
    for r in np.argsort(-reference[:, 1], kind="stable"):
        same = np.flatnonzero((output[:, 0] == reference[r, 0]) & ~taken)
        if not len(same):
            continue
        overlaps = iou(reference[r, 2:6], output[same, 2:6], normalized=False)
        best = int(np.argmax(overlaps))
        if overlaps[best] >= min_iou:
            taken[same[best]] = True
            pairs.append((int(r), int(same[best]), float(overlaps[best])))
    return pairs


@dataclass(frozen=True)
class ImageAgreement:
    """How one image's candidate boxes agree with the reference's (:func:`image_agreement`)."""

    name: str
    counted_reference: int  # reference boxes above the score threshold
    counted_output: int  # candidate boxes above the score threshold
    missed: int  # counted reference boxes the candidate does not reproduce
    extra: int  # counted candidate boxes the reference does not have
    ious: tuple[float, ...]  # matched pairs with a counted box
    drifts: tuple[float, ...]  # their score changes
    problems: tuple[str, ...]  # what failed on this image; empty when it agrees

    @property
    def recall(self) -> float:
        return 1.0 - self.missed / self.counted_reference if self.counted_reference else 1.0

    @property
    def precision(self) -> float:
        return 1.0 - self.extra / self.counted_output if self.counted_output else 1.0


def image_agreement(name: str, reference: np.ndarray, output: np.ndarray, precision: str, gate: AccuracyGate,
                    threshold: float) -> ImageAgreement:
    """One image's box agreement under ``gate`` (see :func:`compare_detections`)."""
    reduced = precision != "fp32"
    min_iou = gate.min_box_iou_reduced if reduced else gate.min_box_iou_fp32
    max_drift = gate.max_score_drift_reduced if reduced else gate.max_score_drift_fp32
    reference, output = reference[reference[:, 0] >= 0], output[output[:, 0] >= 0]  # class -1: padding rows
    counted_ref, counted_out = reference[:, 1] > threshold, output[:, 1] > threshold
    matched_ref, matched_out = np.zeros(len(reference), bool), np.zeros(len(output), bool)
    ious, drifts = [], []
    for r, o, overlap in match_boxes(reference, output, min_iou):
        matched_ref[r] = matched_out[o] = True
        if counted_ref[r] or counted_out[o]:
            ious.append(overlap)
            drifts.append(abs(float(reference[r, 1]) - float(output[o, 1])))
    n_ref, n_out = int(counted_ref.sum()), int(counted_out.sum())
    missed, extra = int((counted_ref & ~matched_ref).sum()), int((counted_out & ~matched_out).sum())
    agreement = ImageAgreement(name, n_ref, n_out, missed, extra, tuple(ious), tuple(drifts), ())
    problems = []
    if agreement.recall < gate.min_box_recall:
        problems.append(f"{missed} of {n_ref} reference boxes not reproduced at IoU >= {min_iou} "
                        f"(recall {agreement.recall:.3f} < {gate.min_box_recall})")
    if agreement.precision < gate.min_box_precision:
        problems.append(f"{extra} of {n_out} boxes not in the reference (precision {agreement.precision:.3f} < "
                        f"{gate.min_box_precision})")
    if max(drifts, default=0.0) > max_drift:
        problems.append(f"score drift {max(drifts):.4f} > {max_drift}")
    return dataclasses.replace(agreement, problems=tuple(problems))


def _threshold(reference: Detections, gate: AccuracyGate) -> float:
    return reference.draw_threshold if gate.box_score_threshold is None else gate.box_score_threshold


def compare_detections(reference: Detections, output: Detections, precision: str, gate: AccuracyGate) -> Accuracy:
    """The box agreement gate: per reference image, the candidate's post-NMS boxes against the reference's.

    Boxes *count* when they score above ``gate.box_score_threshold`` (default: the model's ``draw_threshold``,
    what a user sees). Every row of both sides takes part in the matching (:func:`match_boxes`, IoU at least
    ``min_box_iou_fp32`` or ``min_box_iou_reduced``), so a box whose score crosses the threshold by a hair is
    still matched; then, per image, at least ``min_box_recall`` of the counted reference boxes must be reproduced,
    at least ``min_box_precision`` of the counted candidate boxes must be in the reference, and no matched pair
    with a counted box may change its score by more than ``max_score_drift_fp32`` / ``max_score_drift_reduced``.
    The verdict names each image that failed and what failed there, then the figures over all images."""
    if reference.names != output.names:
        return Accuracy(None, None, float("inf"), float("inf"), None, False,
                        f"detections of images {list(output.names)} != {list(reference.names)}")
    threshold = _threshold(reference, gate)
    images = [image_agreement(name, ref, out, precision, gate, threshold)
              for name, ref, out in zip(reference.names, reference.rows, output.rows)]
    drift = max((d for a in images for d in a.drifts), default=0.0)
    ref_max = max((float(r[:, 1].max()) for r in reference.rows if len(r)), default=0.0)
    recall, prec = min((a.recall for a in images), default=1.0), min((a.precision for a in images), default=1.0)
    min_iou = min((i for a in images for i in a.ious), default=1.0)
    compared = sum(a.counted_reference for a in images)
    figures = (f"box recall {recall:.3f}, precision {prec:.3f}, min IoU {min_iou:.4f}, score drift {drift:.4f} "
               f"over {compared} boxes above {threshold:g} on {len(images)} images")
    if reference.not_judged:
        figures += f"; not judged: {reference.not_judged}"
    failures = [f"{a.name}: {', '.join(a.problems)}" for a in images if a.problems]
    why = f"{'; '.join(failures)} ({figures})" if failures else f"within thresholds ({figures})"
    return Accuracy(None, None, drift, drift / max(ref_max, 1e-12), None, not failures, why,
                    box_recall=recall, box_precision=prec, min_box_iou=min_iou, boxes_compared=compared)


def reproducible_images(reference: Detections, variant: Detections, gate: AccuracyGate) -> tuple[str, ...]:
    """The images on which the fp32 reference, computed another legitimate way (``variant``: other kernels,
    other thread count), reproduces every counted box (recall and precision 1, IoU and score drift within the fp32
    bounds). On the others the boxes depend on summation order (seen on seeded PicoDet: a mirrored photo where
    more than ``keep_top_k`` boxes score 1.0, so which ones NMS keeps is arbitrary), so no candidate can be judged
    there; on these, a candidate's legitimate reordering has the recall and precision margins to itself."""
    exact = dataclasses.replace(gate, min_box_recall=1.0, min_box_precision=1.0)
    threshold = _threshold(reference, gate)
    return tuple(name for name, ref, out in zip(reference.names, reference.rows, variant.rows)
                 if not image_agreement(name, ref, out, "fp32", exact, threshold).problems)
