"""The user's ``hpi_config``, typed and validated: :class:`HpiConfig` and the :class:`AccuracyGate` it carries.

Plain values only: nothing here imports a backend or the selection machinery, so every module can read a config.
What the values *mean* (which backend runs, with which threads) is decided in :mod:`hpi.selection.choice`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpi.errors import InvalidConfigError


@dataclass(frozen=True)
class AccuracyGate:
    """What a candidate must reproduce of the fp32 reference on the reference inputs (configurable through
    ``hpi_config={"accuracy_gate": {...}}``).

    ``rel_error`` is the largest absolute output difference divided by the largest absolute reference output, so it
    is comparable across logits, probabilities and embeddings. fp32 candidates compute the same function with other
    kernels, so they must match tightly: a larger error means a wrong conversion. Reduced-precision candidates
    (bf16, fp16) are judged by what a classifier's user reads, the ranking: on the seeded PP-LCNet_x1_0 bf16 keeps
    every top-1 but moves some top-1 probabilities by up to 0.3 (on the trained text-direction model, by 0.03), so a
    fixed score bound would say more about the weights than about the engine. Set ``max_rel_error_reduced`` to bound
    scores too, or forbid reduced precision with ``allow_reduced_precision=False``.

    The fp32 score bound adapts to the model (:func:`hpi.selection.gate.fp32_bound`): selection runs the reference
    a second time with other kernels and another thread count (Paddle without oneDNN, ONNX Runtime without graph
    fusions), and the relative difference of those two runs is what legitimate fp32 reordering produces on this
    model (the *spread*). The bound is ``max(max_rel_error_fp32, fp32_spread_factor x spread)``, never above
    ``max_rel_error_fp32_cap``: shallow nets keep the 1e-3 floor, a deep net whose fp32 kernels legitimately
    drift further (seeded PP-HGNetV2-B6: ONNX Runtime at 1.05e-3) gets a bound measured on it. The factor allows
    for a candidate whose kernels differ from the reference in more ways (fusions, other algorithms) than the one
    measured variant does; the cap keeps a broken conversion (a wrong op, a dropped bias, a changed weight) out
    whatever the spread, and the ranking checks apply to fp32 candidates as well.
    """

    min_top1_agreement: float = 1.0  # classification: fraction of inputs whose top-1 equals the reference's
    min_top5_overlap: float = 0.8  # classification: mean fraction of the reference's top-5 found in the candidate's
    max_rel_error_fp32: float = 1e-3  # fp32 backends differ only by summation order: the bound's floor
    fp32_spread_factor: float = 4.0  # fp32 bound: this many times the reference's measured reordering spread
    max_rel_error_fp32_cap: float = 1e-2  # the fp32 bound never exceeds this, whatever the spread
    max_rel_error_reduced: float | None = None  # bf16 / fp16 score bound; None: judged by ranking (and cosine)
    min_cosine_fp32: float = 0.9999  # embedding models: every output row's cosine to the reference
    min_cosine_reduced: float = 0.99
    # int8 (calibrated post-training quantisation) is judged on its own: rounding to 256 levels moves scores much
    # more than bf16 does, so it keeps the ranking checks and adds a cosine bound on every output row. Defaults are
    # as strict as bf16's on the ranking (every top-1 kept), and never relaxed to let a model pass.
    min_top1_agreement_int8: float = 1.0  # classification: fraction of inputs whose top-1 equals the reference's
    min_top5_overlap_int8: float = 0.8  # classification: mean fraction of the reference's top-5 kept
    max_rel_error_int8: float | None = None  # int8 score bound; None: judged by ranking and cosine
    min_cosine_int8: float = 0.99  # every output row's cosine to the reference (classification and embedding)
    # Detectors (hpi.selection.gate.compare_detections): per reference image, the candidate's post-NMS boxes are
    # matched one to one with the reference's (same class, IoU at least the bound, greedy by reference score).
    # Measured 2026-12-01 (benchmarks/results/detector_selection_2026-12-01.md, 24 real images): fp32 reorderings
    # moved scores by at most 3e-5 and kept every matched box at IoU >= 0.9985; OpenVINO bf16 on the trained
    # PicoDet layout model moved scores by 0.0078 at IoU >= 0.987. The bounds leave 5-30x that.
    box_score_threshold: float | None = None  # boxes that count score above this; None: the model's draw_threshold
    min_box_iou_fp32: float = 0.98  # IoU at which an fp32 candidate's box reproduces a reference box
    min_box_iou_reduced: float = 0.9  # the same for bf16 / fp16 / int8 candidates
    min_box_recall: float = 0.9  # per image: share of the reference's counted boxes the candidate reproduces
    min_box_precision: float = 0.9  # per image: share of the candidate's counted boxes the reference has
    max_score_drift_fp32: float = 1e-3  # largest score change of a matched pair with a counted box, fp32
    max_score_drift_reduced: float = 0.05  # the same for bf16 / fp16 / int8 candidates


@dataclass(frozen=True)
class HpiConfig:
    """PaddleX's ``hpi_config`` keys, plus hpi's own."""

    auto_config: bool = True  # measure candidates and pick the fastest that passes the accuracy gate
    backend: str | None = None  # force a backend: paddle, onnxruntime, openvino, tensorrt
    backend_config: Mapping[str, Any] = field(default_factory=dict)  # that backend's settings (PaddleX names ok)
    allow_reduced_precision: bool = True  # let selection consider bf16 / fp16 / int8 candidates
    threads: int | None = None  # CPU threads for every candidate; None: the machine's cores
    accuracy_gate: Mapping[str, Any] = field(default_factory=dict)  # overrides of AccuracyGate's fields
    fold_preprocess: bool = True  # high-performance mode: normalise inside the graph where the backend can
    spin_wait: bool = True  # engine threads may spin between runs; pipelines turn it off for their sub-models
    # High-performance mode: JPEGs much larger than the model input decode at 1/2, 1/4 or 1/8 scale in libjpeg,
    # where the accuracy gate passes it for this model and engine (hpi.selection.reduced_decode); never upsampling.
    reduced_decode: bool = True
    # int8 candidates are calibrated on these images (a directory of photos); None: the built-in photos. The set's
    # content hash is part of the int8 engines' cache keys and of the decision key (a changed set re-selects).
    # Checked (exists, holds images that decode) where the choice is resolved (hpi.calibration).
    calibration_data: str | None = None
    # The accuracy gate also judges every candidate on these images (a directory of images from the model's own
    # domain: pages for a layout detector, text lines for a text classifier), besides the built-in photos and their
    # mirrors, which are out of domain for such models. The set's content hash is part of the decision key.
    gate_data: str | None = None

    def gate(self) -> AccuracyGate:
        """The :class:`AccuracyGate` with this config's overrides."""
        names = {f.name for f in dataclasses.fields(AccuracyGate)}
        unknown = sorted(set(self.accuracy_gate) - names)
        if unknown:
            raise InvalidConfigError(f"hpi_config.accuracy_gate: unknown key(s) {unknown}; known: {sorted(names)}")
        return AccuracyGate(**self.accuracy_gate)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | HpiConfig | None) -> HpiConfig:
        """Validate PaddleX's ``hpi_config`` mapping; unknown keys are an error that lists the known ones. Whether
        ``backend`` names a real backend is checked where the backend is chosen (:mod:`hpi.selection.choice`)."""
        if isinstance(values, HpiConfig):
            return values
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InvalidConfigError(f"hpi_config: unknown key(s) {unknown}; known: {sorted(names)}")
        cfg = cls(**values)
        if cfg.backend is not None and not isinstance(cfg.backend, str):
            raise InvalidConfigError(f"hpi_config.backend: expected a backend name, got {cfg.backend!r}")
        if not isinstance(cfg.backend_config, Mapping):
            raise InvalidConfigError("hpi_config.backend_config: expected a mapping")
        if cfg.calibration_data is not None and not isinstance(cfg.calibration_data, str | os.PathLike):
            raise InvalidConfigError(f"hpi_config.calibration_data: expected a directory, got {cfg.calibration_data!r}")
        if cfg.gate_data is not None and not isinstance(cfg.gate_data, str | os.PathLike):
            raise InvalidConfigError(f"hpi_config.gate_data: expected a directory, got {cfg.gate_data!r}")
        return cfg
