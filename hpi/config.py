"""The user's ``hpi_config``, typed and validated: :class:`HpiConfig` and the :class:`AccuracyGate` it carries.

Plain values only: nothing here imports a backend or the selection machinery, so every module can read a config.
What the values *mean* (which backend runs, with which threads) is decided in :mod:`hpi.selection.choice`.
"""

from __future__ import annotations

import dataclasses
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
    """

    min_top1_agreement: float = 1.0  # classification: fraction of inputs whose top-1 equals the reference's
    min_top5_overlap: float = 0.8  # classification: mean fraction of the reference's top-5 found in the candidate's
    max_rel_error_fp32: float = 1e-3  # fp32 backends differ only by summation order
    max_rel_error_reduced: float | None = None  # bf16 / fp16 score bound; None: judged by ranking (and cosine)
    min_cosine_fp32: float = 0.9999  # embedding models: every output row's cosine to the reference
    min_cosine_reduced: float = 0.99


@dataclass(frozen=True)
class HpiConfig:
    """PaddleX's ``hpi_config`` keys, plus hpi's own."""

    auto_config: bool = True  # measure candidates and pick the fastest that passes the accuracy gate
    backend: str | None = None  # force a backend: paddle, onnxruntime, openvino, tensorrt
    backend_config: Mapping[str, Any] = field(default_factory=dict)  # that backend's settings (PaddleX names ok)
    allow_reduced_precision: bool = True  # let selection consider bf16 / fp16 candidates
    threads: int | None = None  # CPU threads for every candidate; None: the machine's cores
    accuracy_gate: Mapping[str, Any] = field(default_factory=dict)  # overrides of AccuracyGate's fields
    fold_preprocess: bool = True  # high-performance mode: normalise inside the graph where the backend can
    spin_wait: bool = True  # engine threads may spin between runs; pipelines turn it off for their sub-models

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
        return cfg
