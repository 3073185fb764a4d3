"""The typed outcome of a selection: :class:`SelectionRecord` (the winner, the reference, every loser and why)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hpi.backends import get_backend, list_backends
from hpi.config import AccuracyGate
from hpi.device import Device
from hpi.harness import Timing
from hpi.selection.candidates import Candidate
from hpi.selection.gate import Accuracy
from hpi.version import __version__

_RECORD_VERSION = 1


@dataclass(frozen=True)
class RatioInterval:
    """Candidate over normal mode from paired interleaved rounds: the geometric mean of the per-round ratios and its
    two-sided bootstrap interval (``confidence``), on the figure the choice compares (``path``), and the line the
    whole interval must lie below for the candidate to replace normal mode (hpi.selection.measure.pick_winner)."""

    low: float
    estimate: float
    high: float
    rounds: int
    path: str  # "end to end" or "inference"
    confidence: float
    line: float  # 1 - the minimum gain (0.95)

    @property
    def verdict(self) -> str:
        """``faster`` (the whole interval below the line), ``not faster`` (none of it) or ``undecided`` (it
        straddles the line: more rounds may tell)."""
        return "faster" if self.high < self.line else "not faster" if self.low >= self.line else "undecided"

    def describe(self) -> str:
        return (f"{self.path} candidate/normal {self.estimate:.3f} ({self.confidence:.0%} interval {self.low:.3f}-"
                f"{self.high:.3f}, {self.rounds} paired rounds)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CandidateResult:
    candidate: Candidate
    status: str  # "winner", "passed", "rejected" (accuracy), "failed" (build or run), "unavailable"
    reason: str
    timing: Timing | None = None
    accuracy: Accuracy | None = None
    build_s: float | None = None  # export + compile + load, including cache hits
    rounds_p50_ms: tuple[float, ...] = ()  # p50 of each interleaved timing round; ``timing`` is the median round's
    e2e_timing: Timing | None = None  # the median round's end to end (decoded image to top-k, as predict() runs it)
    rounds_e2e_p50_ms: tuple[float, ...] = ()  # end-to-end p50 of each round; what the choice compares
    rounds_other_cores: tuple[float, ...] = ()  # CPU cores other processes used during each round (noise)
    int8_overflow: str = ""  # int8: how the quantised model avoids 16-bit saturation (quantize.overflow_handling)
    # candidate/normal from paired rounds: {low, estimate, high, rounds, path, confidence} (measure.RatioInterval)
    ratio_interval: RatioInterval | None = None

    @property
    def decisive_p50_ms(self) -> float:
        """The p50 the choice compares: end to end where measured, else inference alone."""
        t = self.e2e_timing or self.timing
        return t.p50_ms if t else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": dataclasses.asdict(self.candidate),
            "status": self.status,
            "reason": self.reason,
            "timing": self.timing.to_dict() if self.timing else None,
            "accuracy": dataclasses.asdict(self.accuracy) if self.accuracy else None,
            "build_s": self.build_s,
            "rounds_p50_ms": list(self.rounds_p50_ms),
            "e2e_timing": self.e2e_timing.to_dict() if self.e2e_timing else None,
            "rounds_e2e_p50_ms": list(self.rounds_e2e_p50_ms),
            "rounds_other_cores": list(self.rounds_other_cores),
            "int8_overflow": self.int8_overflow,
            "ratio_interval": self.ratio_interval.to_dict() if self.ratio_interval else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CandidateResult:
        return cls(
            candidate=Candidate(**d["candidate"]),
            status=d["status"],
            reason=d["reason"],
            timing=Timing(**d["timing"]) if d.get("timing") else None,
            accuracy=Accuracy(**d["accuracy"]) if d.get("accuracy") else None,
            build_s=d.get("build_s"),
            rounds_p50_ms=tuple(d.get("rounds_p50_ms", ())),
            e2e_timing=Timing(**d["e2e_timing"]) if d.get("e2e_timing") else None,
            rounds_e2e_p50_ms=tuple(d.get("rounds_e2e_p50_ms", ())),
            rounds_other_cores=tuple(d.get("rounds_other_cores", ())),
            int8_overflow=d.get("int8_overflow", ""),
            ratio_interval=RatioInterval(**d["ratio_interval"]) if d.get("ratio_interval") else None,
        )


@dataclass(frozen=True)
class SelectionRecord:
    """The typed, cached outcome of a selection: the winner, the reference, every loser and why."""

    model_name: str
    model_hash: str
    device: str
    device_signature: str
    batch_size: int
    threads: int | None
    reference: str  # label of the fp32 reference candidate
    results: tuple[CandidateResult, ...]
    versions: dict[str, str]
    gate: AccuracyGate
    allow_reduced_precision: bool
    created: float
    fp32_spread: float | None = None  # relative difference of the reference and its reordering variant
    fp32_bound: float | None = None  # the fp32 relative-error bound used (hpi.selection.gate.fp32_bound)
    fp32_spread_from: str = ""  # the variant that measured the spread, or why none did
    calibration: str = ""  # int8 candidates' calibration set (CalibrationSet.label), "" when none was a candidate
    judged_on: str = ""  # the images the accuracy gate judged (hpi.selection.measure.judged_on)

    @property
    def winner(self) -> CandidateResult:
        return next(r for r in self.results if r.status == "winner")

    @property
    def normal(self) -> CandidateResult | None:
        """Paddle Inference fp32 (PaddleX's normal mode), when it could run."""
        return next((r for r in self.results if r.candidate.backend == "paddle" and r.candidate.precision == "fp32"
                     and not r.candidate.config.get("use_tensorrt")), None)

    @property
    def speedup(self) -> float | None:
        """Normal mode over the winner, inference alone (the seeds' table's figure)."""
        return self._ratio("timing")

    @property
    def e2e_speedup(self) -> float | None:
        """Normal mode over the winner, end to end (decoded image to top-k) in the selection's median rounds."""
        return self._ratio("e2e_timing")

    def _ratio(self, field: str) -> float | None:
        normal = self.normal
        mine, theirs = getattr(self.winner, field), getattr(normal, field) if normal else None
        return theirs.p50_ms / mine.p50_ms if mine and theirs else None

    def reason(self) -> str:
        w = self.winner
        why = w.reason.split(";")[0]
        text = f"measured: {w.candidate.label} of {len(self.results)} candidates, {why}, p50 {w.timing.p50_ms:.2f} ms"
        if self.speedup:
            text += f", {self.speedup:.2f}x normal mode"
        return text

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["results"] = [r.to_dict() for r in self.results]
        d["gate"] = dataclasses.asdict(self.gate)
        d["format"] = _RECORD_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SelectionRecord:
        d = dict(d)
        d.pop("format", None)
        d["results"] = tuple(CandidateResult.from_dict(r) for r in d["results"])
        d["gate"] = AccuracyGate(**d["gate"])
        return cls(**d)


def library_versions(device: Device) -> dict[str, str]:
    """hpi's version and every backend library's that can run on ``device``: part of the decision key."""
    versions = {"hpi": __version__}
    for name in list_backends():
        backend = get_backend(name)
        if backend.unavailable_reason(device) is None:
            versions[name] = backend.version()
    return versions
