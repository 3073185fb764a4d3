"""The accuracy gate: a candidate's outputs against the fp32 reference's, on the reference inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpi.config import AccuracyGate
from hpi.selection.candidates import Candidate


@dataclass(frozen=True)
class Accuracy:
    """How a candidate's outputs compare with the reference's."""

    top1_agreement: float | None  # classification only
    top5_overlap: float | None  # classification only
    max_abs_error: float
    max_rel_error: float
    min_cosine: float
    passed: bool
    why: str  # which threshold failed, or "within thresholds"


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


def compare_outputs(task: str, reference: np.ndarray, output: np.ndarray, precision: str, gate: AccuracyGate,
                    *, max_rel_fp32: float | None = None) -> Accuracy:
    """Gate ``output`` against ``reference`` (both [N, ...] float arrays of the model's first output).
    ``max_rel_fp32`` replaces ``gate.max_rel_error_fp32`` for fp32 outputs (the model's adaptive bound)."""
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


def trusted_reference(task: str, outputs: Sequence[tuple[Candidate, np.ndarray]], gate: AccuracyGate
                      ) -> tuple[np.ndarray, str | None]:
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
