"""Measured backend selection: the heart of high-performance mode.

For a model and device, every available candidate (backend x precision) is built through the engine cache, run on
real reference inputs, checked against the fp32 reference (Paddle Inference, or ONNX Runtime for ONNX-only models),
and timed, each in its own process. The fastest candidate that passes the accuracy gate wins. The decision is a
:class:`SelectionRecord`, cached under the same key rules as engines: it is reused at once by ``use_hpip=True`` and
measured again when the model, a library version, the hardware or the precision policy changes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpi.backends import get_backend, list_backends
from hpi.backends.base import Engine
from hpi.cache import EngineCache
from hpi.device import Device, device_signature, parse_device, resolve_threads
from hpi.errors import BackendUnavailableError, HpiError
from hpi.harness import Timing, run_isolated, time_callable
from hpi.model import ModelSource
from hpi.select import BackendChoice, HpiConfig

logger = logging.getLogger(__name__)

SAMPLE_IMAGES = Path(__file__).parent / "data" / "images"
DECISION_FILE = "decision.json"
_RECORD_VERSION = 1


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
class Candidate:
    """One way to run the model."""

    backend: str
    precision: str
    config: dict[str, Any] = field(default_factory=dict)  # the backend config's values (precision included)

    @property
    def label(self) -> str:
        extra = "+trt" if self.config.get("use_tensorrt") else ""
        return f"{self.backend}{extra}[{self.precision}]"


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


@dataclass(frozen=True)
class CandidateResult:
    candidate: Candidate
    status: str  # "winner", "passed", "rejected" (accuracy), "failed" (build or run), "unavailable"
    reason: str
    timing: Timing | None = None
    accuracy: Accuracy | None = None
    build_s: float | None = None  # export + compile + load, including cache hits

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": dataclasses.asdict(self.candidate),
            "status": self.status,
            "reason": self.reason,
            "timing": self.timing.to_dict() if self.timing else None,
            "accuracy": dataclasses.asdict(self.accuracy) if self.accuracy else None,
            "build_s": self.build_s,
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
        normal = self.normal
        if normal is None or normal.timing is None or self.winner.timing is None:
            return None
        return normal.timing.p50_ms / self.winner.timing.p50_ms

    def reason(self) -> str:
        w = self.winner
        text = f"measured: fastest of {len(self.results)} candidates passing the accuracy gate, p50 {w.timing.p50_ms:.2f} ms"
        if self.speedup:
            text += f", {self.speedup:.2f}x normal mode"
        return text

    def choice(self) -> BackendChoice:
        w = self.winner.candidate
        config = get_backend(w.backend).make_config(w.config)
        return BackendChoice(w.backend, config, self.reason(), "measured")

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
    from hpi import __version__

    versions = {"hpi": __version__}
    for name in list_backends():
        backend = get_backend(name)
        if backend.unavailable_reason(device) is None:
            versions[name] = backend.version()
    return versions


def candidates(source: ModelSource, device: Device, hpi_config: HpiConfig) -> tuple[list[Candidate], dict[str, str]]:
    """Every candidate that can run here, and the reason each other backend cannot."""
    out: list[Candidate] = []
    skipped: dict[str, str] = {}
    for name in list_backends():
        backend = get_backend(name)
        if not backend.can_load(source.format):
            skipped[name] = f"cannot load {source.format} models"
            continue
        reason = backend.unavailable_reason(device)
        if reason:
            skipped[name] = reason
            continue
        fields = {f.name for f in dataclasses.fields(backend.config_class)}
        base: dict[str, Any] = {}
        if "threads" in fields and not device.is_gpu:
            base["threads"] = resolve_threads(hpi_config.threads)
        for precision in backend.precisions(device):
            if precision != "fp32" and not hpi_config.allow_reduced_precision:
                continue
            config = {**base, "precision": precision}
            if device.is_gpu and backend.capabilities.tensorrt_subgraphs:
                # fp32 without TensorRT (plain CUDA), and TensorRT subgraphs at every precision.
                if precision == "fp32":
                    out.append(Candidate(name, precision, dict(config)))
                out.append(Candidate(name, precision, {**config, "use_tensorrt": True}))
            elif name == "paddle" and precision == "bf16":
                out.append(Candidate(name, precision, config))
            else:
                out.append(Candidate(name, precision, config))
    return out, skipped


def reference_candidate(source: ModelSource, device: Device, hpi_config: HpiConfig) -> Candidate:
    """Paddle Inference fp32 (normal mode); ONNX Runtime fp32 for a model only available as ONNX."""
    name = "paddle" if source.format == "paddle" else "onnxruntime"
    config: dict[str, Any] = {"precision": "fp32"}
    if not device.is_gpu:
        config["threads"] = resolve_threads(hpi_config.threads)
    return Candidate(name, "fp32", config)


def reference_inputs(source: ModelSource) -> np.ndarray:
    """The built-in photos and their mirror images, preprocessed the reference way: real inputs for the gate."""
    from hpi.preprocess.decode import decode_image
    from hpi.preprocess.reference import preprocess_batch

    images = []
    for path in sorted(SAMPLE_IMAGES.glob("*.jpg")):
        rgb = decode_image(path.read_bytes(), str(path))
        images += [rgb, np.ascontiguousarray(rgb[:, ::-1])]
    return preprocess_batch(source.spec.preprocess, images)


def compare_outputs(task: str, reference: np.ndarray, output: np.ndarray, precision: str, gate: AccuracyGate
                    ) -> Accuracy:
    """Gate ``output`` against ``reference`` (both [N, ...] float arrays of the model's first output)."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = output.reshape(len(output), -1).astype(np.float64)
    if ref.shape != out.shape:
        return Accuracy(None, None, float("inf"), float("inf"), -1.0, False,
                        f"output shape {out.shape} != {ref.shape}")
    abs_err = float(np.abs(out - ref).max())
    rel_err = abs_err / max(float(np.abs(ref).max()), 1e-12)
    cos = np.sum(ref * out, 1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-12)
    min_cos = float(cos.min())
    reduced = precision != "fp32"
    failures = []
    top1 = top5 = None
    max_rel = gate.max_rel_error_reduced if reduced else gate.max_rel_error_fp32
    if max_rel is not None and rel_err > max_rel:
        failures.append(f"relative error {rel_err:.2e} > {max_rel:.0e}")
    if task == "classification":
        k = min(5, ref.shape[1])
        top1 = float((ref.argmax(1) == out.argmax(1)).mean())
        ref_top = np.argsort(-ref, axis=1, kind="stable")[:, :k]
        out_top = np.argsort(-out, axis=1, kind="stable")[:, :k]
        top5 = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, out_top)]))
        if top1 < gate.min_top1_agreement:
            failures.append(f"top-1 agreement {top1:.3f} < {gate.min_top1_agreement}")
        if top5 < gate.min_top5_overlap:
            failures.append(f"top-5 overlap {top5:.3f} < {gate.min_top5_overlap}")
    else:
        min_required = gate.min_cosine_reduced if reduced else gate.min_cosine_fp32
        if min_cos < min_required:
            failures.append(f"cosine {min_cos:.5f} < {min_required}")
    why = "; ".join(failures) if failures else "within thresholds"
    return Accuracy(top1, top5, abs_err, rel_err, min_cos, not failures, why)


def engine_from_request(request: dict[str, Any]) -> tuple[ModelSource, Engine, float]:
    """The loaded engine an isolated measurement asks for (keys model_dir, device, backend, config, cache_dir),
    and the seconds its build and load took (cache hits included)."""
    source = ModelSource.from_path(request["model_dir"])
    backend = get_backend(request["backend"])
    t0 = time.perf_counter()
    engine = backend.engine(source, parse_device(request["device"]), request["config"],
                            EngineCache(request["cache_dir"])).load()
    return source, engine, time.perf_counter() - t0


def measure_candidate(request: dict[str, Any]) -> dict[str, Any]:
    """Build, run and time one candidate (runs in its own process under :func:`run_isolated`).

    Request keys: model_dir, device, backend, config, cache_dir, inputs (an .npy path), outputs (an .npy path to
    write), batch_size, budget_s, warmup.
    """
    _, engine, build_s = engine_from_request(request)
    inputs = np.load(request["inputs"])
    chunk = max(1, int(request.get("chunk", 8)))
    outputs = np.concatenate([engine.run(inputs[i:i + chunk])[0] for i in range(0, len(inputs), chunk)])
    np.save(request["outputs"], outputs)
    bs = int(request["batch_size"])
    batch = np.ascontiguousarray(np.resize(inputs, (bs, *inputs.shape[1:])))
    sync = getattr(engine, "synchronize", None)
    # Fewer warm-up calls and a smaller floor for big batches: 10 warm-up calls of a large model at batch 8
    # take longer than the timing itself.
    timing = time_callable(lambda: engine.run(batch), warmup=int(request.get("warmup", max(3, 10 // bs))),
                           budget_s=float(request.get("budget_s", 3.0)), items_per_call=bs,
                           min_iterations=max(10, 20 // bs), synchronize=sync)
    engine.close()
    return {"timing": timing.to_dict(), "build_s": build_s, "describe": engine.describe()}


def select(
    source: ModelSource,
    device: Device,
    hpi_config: HpiConfig,
    *,
    cache: EngineCache,
    batch_size: int = 1,
    gate: AccuracyGate | None = None,
    budget_s: float = 3.0,
    isolate: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SelectionRecord:
    """Measure every candidate and pick the fastest that passes ``gate``. Does not read or write the decision cache."""
    gate = gate or hpi_config.gate()
    cands, skipped = candidates(source, device, hpi_config)
    ref_cand = reference_candidate(source, device, hpi_config)
    if ref_cand not in cands:
        raise BackendUnavailableError(
            f"the fp32 reference {ref_cand.label} cannot run on {device}: {skipped.get(ref_cand.backend, '?')}")
    cands.remove(ref_cand)
    cands.insert(0, ref_cand)  # the reference is measured first: every other candidate is compared with it
    measured: list[tuple[Candidate, np.ndarray, Timing, float]] = []
    failed: list[CandidateResult] = []
    with tempfile.TemporaryDirectory(prefix="hpi-select-") as tmp:
        inputs_path = Path(tmp) / "inputs.npy"
        np.save(inputs_path, reference_inputs(source))
        for i, cand in enumerate(cands):
            if progress:
                progress(f"[{i + 1}/{len(cands)}] {cand.label}")
            out_path = Path(tmp) / f"out{i}.npy"
            request = {"model_dir": str(source.directory), "device": str(device), "backend": cand.backend,
                       "config": cand.config, "cache_dir": str(cache.root), "inputs": str(inputs_path),
                       "outputs": str(out_path), "batch_size": batch_size, "budget_s": budget_s}
            try:
                answer = run_isolated("hpi.selection:measure_candidate", request) if isolate \
                    else measure_candidate(request)
            except HpiError as exc:
                if cand == ref_cand:
                    raise
                failed.append(CandidateResult(cand, "failed", str(exc).splitlines()[-1][:300]))
                continue
            measured.append((cand, np.load(out_path), Timing(**answer["timing"]), answer["build_s"]))
    reference, note = _trusted_reference(source.spec.task, measured, gate)
    results: list[CandidateResult] = []
    for cand, output, timing, build_s in measured:
        acc = compare_outputs(source.spec.task, reference, output, cand.precision, gate)
        status = "passed" if acc.passed else "rejected"
        why = acc.why if not (note and cand == ref_cand) else f"{acc.why}; {note}"
        results.append(CandidateResult(cand, status, why, timing, acc, build_s))
    results += failed
    for name, reason in skipped.items():
        results.append(CandidateResult(Candidate(name, "-"), "unavailable", reason))
    passed = [r for r in results if r.status == "passed"]
    if not passed:
        raise HpiError(f"no candidate for {source.name} on {device} passed the accuracy gate: "
                       + "; ".join(f"{r.candidate.label}: {r.reason}" for r in results))
    best = min(passed, key=lambda r: r.timing.p50_ms)
    results = [dataclasses.replace(r, status="winner", reason=f"fastest passing candidate; {r.reason}")
               if r is best else r for r in results]
    return SelectionRecord(
        model_name=source.name,
        model_hash=source.content_hash,
        device=str(device),
        device_signature=device_signature(device),
        batch_size=batch_size,
        threads=None if device.is_gpu else resolve_threads(hpi_config.threads),
        reference=ref_cand.label,
        results=tuple(results),
        versions=library_versions(device),
        gate=gate,
        allow_reduced_precision=hpi_config.allow_reduced_precision,
        created=time.time(),
    )


def _trusted_reference(task: str, measured: list[tuple[Candidate, np.ndarray, Timing, float]],
                       gate: AccuracyGate) -> tuple[np.ndarray, str | None]:
    """The reference output the gate compares against: the fp32 reference candidate's (measured first), unless
    every other fp32 backend agrees with the others and not with it. Then the reference backend is the one that is
    wrong (seen here: Paddle Inference with oneDNN on ConvNeXt's channel LayerNorm), and the agreeing backends'
    output becomes the reference; the note says so in the record."""
    ref_cand, ref_out = measured[0][0], measured[0][1]
    others = [(c, out) for c, out, _, _ in measured[1:] if c.precision == "fp32"]
    if len(others) < 2 or compare_outputs(task, ref_out, others[0][1], "fp32", gate).passed:
        return ref_out, None
    agree = all(compare_outputs(task, others[0][1], out, "fp32", gate).passed for _, out in others[1:])
    disagree = not any(compare_outputs(task, ref_out, out, "fp32", gate).passed for _, out in others)
    if agree and disagree:
        names = ", ".join(c.label for c, _ in others)
        return others[0][1], f"{ref_cand.label} disagrees with {names}, which agree with each other: they are the reference"
    return ref_out, None


def decision_key(source: ModelSource, device: Device, hpi_config: HpiConfig, batch_size: int, gate: AccuracyGate
                 ) -> dict[str, Any]:
    """What a cached decision depends on: model bytes, hardware, every library version, policy and gate."""
    return {
        "model": source.content_hash,
        "device": str(device),
        "device_signature": device_signature(device),
        "versions": library_versions(device),
        "allow_reduced_precision": hpi_config.allow_reduced_precision,
        "threads": None if device.is_gpu else resolve_threads(hpi_config.threads),
        "batch_size": batch_size,
        "gate": dataclasses.asdict(gate),
    }


def cached_selection(source: ModelSource, device: Device, hpi_config: HpiConfig, *, cache: EngineCache,
                     batch_size: int = 1, gate: AccuracyGate | None = None, **kwargs: Any) -> SelectionRecord:
    """The cached decision for this model, hardware, library versions and policy, measuring it if absent."""
    gate = gate or hpi_config.gate()
    parts = decision_key(source, device, hpi_config, batch_size, gate)
    found = cache.lookup("decision", parts)
    if found is not None:
        return _read_record(found)
    holder: list[SelectionRecord] = []

    def build(out: Path) -> None:
        record = select(source, device, hpi_config, cache=cache, batch_size=batch_size, gate=gate, **kwargs)
        holder.append(record)
        (out / DECISION_FILE).write_text(json.dumps(record.to_dict(), indent=2), encoding="utf-8")

    entry = cache.get_or_build("decision", parts, build)
    if holder:
        return holder[0]
    return _read_record(entry)


def _read_record(entry: Path) -> SelectionRecord:
    return SelectionRecord.from_dict(json.loads((entry / DECISION_FILE).read_text(encoding="utf-8")))


def measured_choice(source: ModelSource, device: Device, hpi_config: HpiConfig, *, cache: EngineCache
                    ) -> BackendChoice:
    """``use_hpip=True``: the cached (or freshly measured) winner as a :class:`BackendChoice`."""
    record = cached_selection(source, device, hpi_config, cache=cache, batch_size=1)
    logger.info("selection for %s on %s: %s", source.name, device, record.reason())
    return record.choice()
