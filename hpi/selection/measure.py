"""Measured selection: build, run and time every candidate, each in its own process, in interleaved rounds; normal
mode wins unless a candidate that passes the gate is faster with confidence.

For a model and device, every available candidate (backend x precision) is built through the engine cache, run on
real reference inputs (the built-in photos and their mirrors), checked against the fp32 reference (Paddle
Inference, or ONNX Runtime for ONNX-only models) and timed. :func:`select` returns the
:class:`~hpi.selection.record.SelectionRecord`; :mod:`hpi.selection.decision` caches it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hpi.backends import get_backend
from hpi.backends.base import Engine
from hpi.cache import EngineCache
from hpi.calibration import calibration_set
from hpi.config import AccuracyGate, HpiConfig
from hpi.device import Device, device_signature, parse_device, resolve_threads
from hpi.errors import BackendUnavailableError, HpiError, InvalidConfigError
from hpi.harness import IsolatedWorker, Timing, run_isolated, time_callable
from hpi.model import ModelSource
from hpi.preprocess.decode import decode_image
from hpi.preprocess.reference import preprocess_batch
from hpi.selection.candidates import Candidate, candidates, reference_candidate, reordering_variant
from hpi.selection.gate import compare_outputs, fp32_bound, relative_error, trusted_reference
from hpi.selection.record import CandidateResult, SelectionRecord, library_versions

SAMPLE_IMAGES = Path(__file__).resolve().parent.parent / "data" / "images"
MEASURED_TASKS = ("classification", "embedding")  # what the accuracy gate can judge
ROUNDS = 3  # interleaved timing rounds per candidate
SETTLE_S = 0.2  # pause before each timed call: OpenMP / ONNX Runtime threads of the worker timed before stop spinning
MIN_GAIN = 0.05  # a candidate replaces normal mode only when at least this much faster at p50 (see pick_winner)
# Part of the decision key: a cached decision made under another rule is measured again.
SELECTION_RULE = f"interleaved rounds; normal mode unless {MIN_GAIN:.0%} faster at p50 in most rounds"


def reference_inputs(source: ModelSource) -> np.ndarray:
    """The built-in photos and their mirror images, preprocessed the reference way: real inputs for the gate."""
    if source.spec.task not in MEASURED_TASKS or source.spec.preprocess is None:
        raise InvalidConfigError(
            f"{source.name} is a {source.spec.task} model; measured selection judges "
            f"{' and '.join(MEASURED_TASKS)} outputs only"
        )
    images = []
    for path in sorted(SAMPLE_IMAGES.glob("*.jpg")):
        rgb = decode_image(path.read_bytes(), str(path))
        images += [rgb, np.ascontiguousarray(rgb[:, ::-1])]
    return preprocess_batch(source.spec.preprocess, images)


def engine_from_request(request: dict[str, Any]) -> tuple[ModelSource, Engine, float]:
    """The loaded engine an isolated measurement asks for (keys model_dir, device, backend, config, cache_dir),
    and the seconds its build and load took (cache hits included)."""
    source = ModelSource.from_path(request["model_dir"])
    backend = get_backend(request["backend"])
    t0 = time.perf_counter()
    engine = backend.engine(source, parse_device(request["device"]), request["config"],
                            EngineCache(request["cache_dir"])).load()
    return source, engine, time.perf_counter() - t0


_KEPT: dict[str, tuple[Engine, float]] = {}  # engines kept loaded between rounds (``keep``), by what they run


def measure_candidate(request: dict[str, Any]) -> dict[str, Any]:
    """Build, run and time one candidate (in its own process: an :class:`~hpi.harness.IsolatedWorker` that keeps
    it for the next round, or :func:`~hpi.harness.run_isolated`).

    Request keys: model_dir, device, backend, config, cache_dir, inputs (an .npy path), outputs (an .npy path to
    write, or None), batch_size, budget_s, warmup; ``timed=False`` writes the outputs only (timing None);
    ``keep=True`` keeps the engine loaded in this process for the next request naming the same candidate;
    ``{"close": True}`` closes every kept engine.
    """
    if request.get("close"):
        for engine, _ in _KEPT.values():
            engine.close()
        _KEPT.clear()
        return {}
    key = json.dumps({k: request[k] for k in ("model_dir", "device", "backend", "config", "cache_dir")},
                     sort_keys=True)
    keep = bool(request.get("keep"))
    if key in _KEPT:
        engine, build_s = _KEPT[key]
    else:
        _, engine, build_s = engine_from_request(request)
        if keep:
            _KEPT[key] = (engine, build_s)
    inputs = np.load(request["inputs"])
    if request.get("outputs"):
        chunk = max(1, int(request.get("chunk", 8)))
        outputs = np.concatenate([engine.run(inputs[i:i + chunk])[0] for i in range(0, len(inputs), chunk)])
        np.save(request["outputs"], outputs)
    timing = None
    if request.get("timed", True):
        bs = int(request["batch_size"])
        batch = np.ascontiguousarray(np.resize(inputs, (bs, *inputs.shape[1:])))
        sync = getattr(engine, "synchronize", None)
        # Fewer warm-up calls and a smaller floor for big batches: 10 warm-up calls of a large model at batch 8
        # take longer than the timing itself.
        timing = time_callable(lambda: engine.run(batch), warmup=int(request.get("warmup", max(3, 10 // bs))),
                               budget_s=float(request.get("budget_s", 3.0)), items_per_call=bs,
                               min_iterations=max(10, 20 // bs), synchronize=sync).to_dict()
    if not keep:
        engine.close()
    return {"timing": timing, "build_s": build_s, "describe": engine.describe()}


def select(
    source: ModelSource,
    device: Device,
    hpi_config: HpiConfig,
    *,
    cache: EngineCache,
    batch_size: int = 1,
    gate: AccuracyGate | None = None,
    budget_s: float = 3.0,
    rounds: int = ROUNDS,
    isolate: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SelectionRecord:
    """Measure every candidate and pick the winner (:func:`pick_winner`): normal mode unless a candidate that passes
    ``gate`` is faster with confidence. Does not read or write the decision cache.

    Each candidate is timed in ``rounds`` short runs of ``budget_s / rounds`` seconds (the first also gives the
    outputs the gate judges), interleaved: reference, A, B, reference, A, B, ... Each candidate's process (an
    :class:`~hpi.harness.IsolatedWorker`) keeps its engine loaded between rounds, so a round costs its budget, not a
    new interpreter. Its recorded timing is that of its median round, and every round's p50 is kept.

    A candidate that fails with an :class:`~hpi.errors.HpiError` (a build or run error) is recorded as failed; a
    bug (:class:`~hpi.errors.HpiInternalError`, also from the measuring child process) is raised.
    """
    gate = gate or hpi_config.gate()
    inputs = reference_inputs(source)  # before anything is built: a model the gate cannot judge fails here
    cands, skipped = candidates(source, device, hpi_config)
    ref_cand = reference_candidate(source, device, hpi_config)
    if ref_cand not in cands:
        raise BackendUnavailableError(
            f"the fp32 reference {ref_cand.label} cannot run on {device}: {skipped.get(ref_cand.backend, '?')}")
    cands.remove(ref_cand)
    cands.insert(0, ref_cand)  # the reference is measured first: every other candidate is compared with it
    measured: list[tuple[Candidate, np.ndarray, Timing, float]] = []
    failed: list[CandidateResult] = []
    round_budget_s = budget_s / rounds  # the rounds share the time one measurement had
    workers: dict[str, IsolatedWorker] = {}  # one process per candidate, kept through the rounds
    with tempfile.TemporaryDirectory(prefix="hpi-select-") as tmp, contextlib.ExitStack() as stack:
        inputs_path = Path(tmp) / "inputs.npy"
        np.save(inputs_path, inputs)
        stack.callback(lambda: [w.close() for w in workers.values()] if isolate
                       else measure_candidate({"close": True}))

        def run(cand: Candidate, out_path: Path | None, timed: bool = True, keep: bool = True) -> dict[str, Any]:
            request = {"model_dir": str(source.directory), "device": str(device), "backend": cand.backend,
                       "config": cand.config, "cache_dir": str(cache.root), "inputs": str(inputs_path),
                       "outputs": str(out_path) if out_path else None, "batch_size": batch_size,
                       "budget_s": round_budget_s, "timed": timed, "keep": keep}
            function = f"{__name__}:measure_candidate"
            if not isolate:
                return measure_candidate(request)
            if not keep:
                return run_isolated(function, request)
            key = json.dumps(dataclasses.asdict(cand), sort_keys=True)
            if key not in workers:
                workers[key] = IsolatedWorker(function)
            time.sleep(SETTLE_S)  # the previous candidate's worker threads stop spinning before this one is timed
            return workers[key].call(request)

        for i, cand in enumerate(cands):
            if progress:
                progress(f"[{i + 1}/{len(cands)}] {cand.label}")
            out_path = Path(tmp) / f"out{i}.npy"
            try:
                answer = run(cand, out_path)
            except HpiError as exc:
                if cand == ref_cand:
                    raise
                failed.append(CandidateResult(cand, "failed", str(exc).splitlines()[-1][:300]))
                continue
            measured.append((cand, np.load(out_path), Timing(**answer["timing"]), answer["build_s"]))
        variant = reordering_variant(ref_cand)
        if progress:
            progress(f"fp32 spread: {describe_variant(variant)}")
        try:
            run(variant, Path(tmp) / "variant.npy", timed=False, keep=False)
            spread: float | None = relative_error(measured[0][1], np.load(Path(tmp) / "variant.npy"))
            spread_note = describe_variant(variant)
        except HpiError as exc:
            spread, spread_note = None, f"not measured ({str(exc).splitlines()[-1][:200]}): the floor applies"
        task = source.spec.task
        reference, note = trusted_reference(task, [(cand, out) for cand, out, _, _ in measured], gate)
        if note:  # the reference was outvoted: its spread says nothing about the agreeing backends
            spread, spread_note = None, "not used: the reference was outvoted; the floor applies"
        bound = fp32_bound(gate, spread)
        results: list[CandidateResult] = []
        for cand, output, timing, build_s in measured:
            acc = compare_outputs(task, reference, output, cand.precision, gate, max_rel_fp32=bound)
            status = "passed" if acc.passed else "rejected"
            why = acc.why if not (note and cand == ref_cand) else f"{acc.why}; {note}"
            results.append(CandidateResult(cand, status, why, timing, acc, build_s, (timing.p50_ms,)))
        # Rounds 2..n: the reference and every passing candidate again, interleaved, so that a noisy neighbour
        # slows all of them in the same round rather than one candidate's whole measurement.
        timings = {id(r): [r.timing] for r in results if r.status == "passed" or r.candidate == ref_cand}
        for n in range(2, rounds + 1):
            for r in results:
                if id(r) not in timings:
                    continue
                if progress:
                    progress(f"round {n}/{rounds}: {r.candidate.label}")
                try:
                    answer = run(r.candidate, None)
                except HpiError as exc:
                    if r.candidate == ref_cand:
                        raise
                    del timings[id(r)]
                    failed.append(dataclasses.replace(r, status="failed",
                                                      reason=f"round {n}: {str(exc).splitlines()[-1][:300]}"))
                    continue
                timings[id(r)].append(Timing(**answer["timing"]))
    results = [r for r in results if r.status != "passed" or id(r) in timings]
    results = [dataclasses.replace(r, timing=median_round(timings[id(r)]),
                                   rounds_p50_ms=tuple(t.p50_ms for t in timings[id(r)])) if id(r) in timings else r
               for r in results]
    results += failed
    for key, reason in skipped.items():
        results.append(CandidateResult(Candidate.unavailable(key), "unavailable", reason))
    passed = [r for r in results if r.status == "passed"]
    if not passed:
        raise HpiError(f"no candidate for {source.name} on {device} passed the accuracy gate: "
                       + "; ".join(f"{r.candidate.label}: {r.reason}" for r in results))
    best, why = pick_winner(next(r for r in results if r.candidate == ref_cand), passed)
    results = [dataclasses.replace(r, status="winner", reason=f"{why}; {r.reason}") if r is best else r
               for r in results]
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
        fp32_spread=spread,
        fp32_bound=bound,
        fp32_spread_from=spread_note,
        calibration=calibration_set(hpi_config.calibration_data).label
        if any(r.candidate.precision == "int8" for r in results if r.status != "unavailable") else "",
    )


def median_round(timings: list[Timing]) -> Timing:
    """The round whose p50 is the median (the lower middle one for an even count): a real measurement, not a mix."""
    return sorted(timings, key=lambda t: t.p50_ms)[(len(timings) - 1) // 2]


def pick_winner(reference: CandidateResult, passed: list[CandidateResult]) -> tuple[CandidateResult, str]:
    """The winner among ``passed`` and why. The reference (normal mode) is kept unless a candidate is faster with
    confidence: its p50 at least :data:`MIN_GAIN` below the reference's in a majority of the rounds (compared
    round by round, so a noisy neighbour slows both alike) and in the median round. Among those, the fastest median
    round wins. A rejected reference (outvoted by the other fp32 backends) leaves the fastest passing candidate."""
    if reference.status != "passed":
        best = min(passed, key=lambda r: r.timing.p50_ms)
        return best, "fastest passing candidate (the reference did not pass)"
    ref_rounds = reference.rounds_p50_ms
    confident = []
    for r in passed:
        if r is reference or len(r.rounds_p50_ms) != len(ref_rounds):
            continue
        wins = sum(c <= (1 - MIN_GAIN) * ref for c, ref in zip(r.rounds_p50_ms, ref_rounds))
        if 2 * wins > len(ref_rounds) and r.timing.p50_ms <= (1 - MIN_GAIN) * reference.timing.p50_ms:
            confident.append((r, wins))
    if not confident:
        return reference, (f"normal mode kept: no passing candidate was {MIN_GAIN:.0%} faster at p50 in a majority "
                           f"of {len(ref_rounds)} interleaved rounds")
    best, wins = min(confident, key=lambda rw: rw[0].timing.p50_ms)
    return best, (f"fastest passing candidate, at least {MIN_GAIN:.0%} faster than normal mode at p50 in {wins} of "
                  f"{len(ref_rounds)} interleaved rounds")


def describe_variant(variant: Candidate) -> str:
    """What the reordering variant changed, for the record: ``paddle[fp32] enable_onednn=False threads=1``."""
    changed = {k: v for k, v in variant.config.items() if k in ("enable_onednn", "graph_optimization", "threads")}
    return " ".join([variant.label, *(f"{k}={v}" for k, v in changed.items())])
