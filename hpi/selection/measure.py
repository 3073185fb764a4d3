"""Measured selection: build, run and time every candidate, each in its own process, in interleaved rounds; normal
mode wins unless a candidate that passes the gate is faster with confidence, end to end on the path users run.

For a model and device, every available candidate (backend x precision) is built through the engine cache, run on
real reference inputs (the built-in photos and their mirrors), checked against the fp32 reference (Paddle
Inference, or ONNX Runtime for ONNX-only models) and timed. Detectors are prepared, run and timed through
:mod:`hpi.selection.detection` and judged on their post-NMS boxes. :func:`select` returns the
:class:`~hpi.selection.record.SelectionRecord`; :mod:`hpi.selection.decision` caches it.

This module is the deciding side; each candidate's process runs :mod:`hpi.selection.worker` (named by
:data:`WORKER`, never imported here: the worker imports the model layer, which imports this module through the
backend choice).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.npyio import NpzFile

from hpi.cache import EngineCache
from hpi.calibration import CalibrationSet, calibration_set
from hpi.config import AccuracyGate, HpiConfig
from hpi.device import Device, device_signature, resolve_threads
from hpi.errors import BackendUnavailableError, HpiError, InvalidConfigError
from hpi.harness import CpuWatch, IsolatedWorker, Timing, call_in_process, run_isolated, wait_until_quiet
from hpi.preprocess.decode import decode_image
from hpi.preprocess.reference import preprocess_batch
from hpi.selection import detection
from hpi.selection.candidates import (
    Candidate,
    candidates,
    high_performance_config,
    int8_overflow,
    reference_candidate,
    reordering_variant,
)
from hpi.selection.gate import Detections, compare_outputs, fp32_bound, relative_error, trusted_reference
from hpi.selection.record import CandidateResult, RatioInterval, SelectionRecord, library_versions
from hpi.source import ModelSource

WORKER = "hpi.selection.worker:measure_candidate"  # what each candidate's process runs, named, never imported
SAMPLE_IMAGES = Path(__file__).resolve().parent.parent / "data" / "images"
MEASURED_TASKS = ("classification", "embedding", "detection")  # what the accuracy gate can judge
ROUNDS = 3  # interleaved timing rounds per candidate
# Before each timed call, wait until the other workers use under 0.1 core (at most this long): a Paddle worker's
# OpenMP threads spin on about one core for 0.2 s after its call, ONNX Runtime's for under 0.1 s (measured here).
QUIET_TIMEOUT_S = 1.0
DISTURBED_CORES = 0.25  # a round during which other processes used more CPU than this is timed again ...
RETRIES = 1  # ... at most this many times; the least disturbed try is kept and its load recorded
MIN_GAIN = 0.05  # a candidate replaces normal mode only when at least this much faster (see pick_winner) ...
CONFIDENCE = 0.90  # ... with this confidence: the two-sided bootstrap interval of candidate/normal below 1 - MIN_GAIN
BOOTSTRAP_RESAMPLES = 4000
MAX_ROUNDS = 9  # more rounds while an interval straddles the line, at most this many in all ...
EXTRA_TIME_FACTOR = 2.0  # ... and within this many times the wall time the first rounds took
# Part of the decision key: a cached decision made under another rule is measured again.
SELECTION_RULE = (f"paired interleaved rounds, end to end; normal mode unless the {CONFIDENCE:.0%} bootstrap interval "
                  f"of candidate/normal lies below {1 - MIN_GAIN:.2f}; up to {MAX_ROUNDS} rounds while it straddles")


def reference_inputs(source: ModelSource, gate_images: CalibrationSet | None = None
                     ) -> np.ndarray | dict[str, np.ndarray]:
    """The gate's images (:func:`reference_images`), preprocessed the reference way: real inputs for the gate. A
    detector's are prepared its own way, with their extra inputs (:func:`hpi.selection.detection.reference_inputs`)."""
    if source.spec.task == "detection":
        return detection.reference_inputs(source, reference_images(gate_images))
    if source.spec.task not in MEASURED_TASKS or source.spec.preprocess is None:
        raise InvalidConfigError(
            f"{source.name} is a {source.spec.task} model; measured selection judges "
            f"{', '.join(MEASURED_TASKS)} outputs only"
        )
    return preprocess_batch(source.spec.preprocess, [rgb for _, rgb in reference_images(gate_images)])


def gate_image_set(gate_data: str | None) -> CalibrationSet | None:
    """``hpi_config.gate_data`` as a checked, hashed image set (None when not given)."""
    return None if gate_data is None else calibration_set(gate_data, "gate_data")


def reference_images(gate_images: CalibrationSet | None = None) -> list[tuple[str, np.ndarray]]:
    """The built-in photos, each followed by its mirror image, then ``gate_images`` (the user's own, from
    ``hpi_config.gate_data`` through :func:`gate_image_set`, in file-name order, named ``<directory>/<file>``),
    named, as RGB uint8."""
    images = []
    for path in sorted(SAMPLE_IMAGES.glob("*.jpg")):
        rgb = decode_image(path.read_bytes(), str(path))
        images += [(path.name, rgb), (f"{path.name} mirrored", np.ascontiguousarray(rgb[:, ::-1]))]
    if gate_images is not None:
        images += [(f"{gate_images.directory.name}/{file.name}", rgb)
                   for file, rgb in zip(gate_images.files, gate_images.images())]
    return images


def judged_on(gate_images: CalibrationSet | None) -> str:
    """What the gate judged, for the record: the built-in photos and mirrors, plus the user's set if given."""
    builtin = f"built-in photos and their mirrors ({2 * len(list(SAMPLE_IMAGES.glob('*.jpg')))} images)"
    return builtin if gate_images is None else f"{builtin} + gate_data {gate_images.label}"


def load_outputs(path: Path) -> np.ndarray | Detections:
    """A candidate's outputs as its process wrote them: an array, or a detector's boxes (an ``.npz`` archive)."""
    loaded = np.load(path)
    return detection.read_detections(loaded) if isinstance(loaded, NpzFile) else loaded


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
    max_rounds: int = MAX_ROUNDS,
    isolate: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SelectionRecord:
    """Measure every candidate and pick the winner (:func:`pick_winner`): normal mode unless a candidate that passes
    ``gate`` is faster with confidence. Does not read or write the decision cache.

    Each candidate is timed in ``rounds`` short runs of ``budget_s / rounds`` seconds (the first also gives the
    outputs the gate judges), interleaved: reference, A, B, reference, A, B, ... Each candidate's process (an
    :class:`~hpi.harness.IsolatedWorker`) keeps its engine loaded between rounds, so a round costs its budget, not a
    new interpreter. Its recorded timing is that of its median round, and every round's p50 is kept.

    After ``rounds`` rounds, while a passing candidate's interval of candidate/normal (:func:`ratio_interval`)
    straddles the :data:`MIN_GAIN` line, the reference and those candidates are timed in more rounds, up to
    ``max_rounds`` in all and within :data:`EXTRA_TIME_FACTOR` times the time the first rounds took; a candidate
    still straddling then leaves normal mode in place.

    A candidate that fails with an :class:`~hpi.errors.HpiError` (a build or run error) is recorded as failed; a
    bug (:class:`~hpi.errors.HpiInternalError`, also from the measuring child process) is raised.
    """
    gate = gate or hpi_config.gate()
    gate_images = gate_image_set(hpi_config.gate_data)  # read and hashed once: inputs and record
    inputs = reference_inputs(source, gate_images)  # before anything is built: a model the gate cannot judge fails here
    cands, skipped = candidates(source, device, hpi_config)
    ref_cand = reference_candidate(source, device, hpi_config)
    if ref_cand not in cands:
        raise BackendUnavailableError(
            f"the fp32 reference {ref_cand.label} cannot run on {device}: {skipped.get(ref_cand.backend, '?')}")
    cands.remove(ref_cand)
    cands.insert(0, ref_cand)  # the reference is measured first: every other candidate is compared with it
    measured: list[tuple[Candidate, np.ndarray | Detections, Round, float]] = []
    failed: list[CandidateResult] = []
    round_budget_s = budget_s / rounds  # the rounds share the time one measurement had ...
    e2e_image = str(sorted(SAMPLE_IMAGES.glob("*.jpg"))[0])
    detector = isinstance(inputs, dict)  # timed from prepared tensors to boxes: no classifier end-to-end path
    workers: dict[str, IsolatedWorker] = {}  # one process per candidate, kept through the rounds
    with tempfile.TemporaryDirectory(prefix="hpi-select-") as tmp, contextlib.ExitStack() as stack:
        inputs_path = Path(tmp) / "inputs.npy"
        if detector:
            detection.write_arrays(inputs_path, inputs)
        else:
            np.save(inputs_path, inputs)
        stack.callback(lambda: [w.close() for w in workers.values()] if isolate
                       else call_in_process(WORKER, {"close": True}))

        def run(cand: Candidate, out_path: Path | None, timed: bool = True, keep: bool = True) -> dict[str, Any]:
            request = {"model_dir": str(source.directory), "device": str(device), "backend": cand.backend,
                       "config": cand.config, "cache_dir": str(cache.root), "inputs": str(inputs_path),
                       "outputs": str(out_path) if out_path else None, "batch_size": batch_size,
                       "budget_s": round_budget_s / 2, "timed": timed, "keep": keep,  # ... inference and e2e
                       **({} if detector else {"e2e_image": e2e_image,
                                               "e2e_config": high_performance_config(cand.backend, cand.config, source,
                                                                                     hpi_config)})}
            if not isolate:
                with CpuWatch([]) as watch:
                    answer = call_in_process(WORKER, request)
                return {**answer, "other_cores": watch.other_cores}  # read after the block: measured then
            if not keep:
                return run_isolated(WORKER, request)
            key = json.dumps(dataclasses.asdict(cand), sort_keys=True)
            if key not in workers:
                workers[key] = IsolatedWorker(WORKER)
            worker = workers[key]
            best: dict[str, Any] | None = None
            for _ in range(1 + RETRIES):  # a round a noisy neighbour disturbed is timed again
                # The other workers' threads stop spinning before this one is timed.
                wait_until_quiet([w.pid for w in workers.values() if w is not worker], timeout_s=QUIET_TIMEOUT_S)
                with CpuWatch([worker.pid]) as watch:
                    answer = worker.call(request)
                answer["other_cores"] = watch.other_cores
                request["outputs"] = None  # written once
                if best is None or (answer["other_cores"] or 0.0) < (best["other_cores"] or 0.0):
                    best = answer
                if not timed or (answer["other_cores"] or 0.0) <= DISTURBED_CORES:
                    break
            return best  # type: ignore[return-value]

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
            measured.append((cand, load_outputs(out_path), Round.from_answer(answer), answer["build_s"]))
        variant = reordering_variant(ref_cand)
        if progress:
            progress(f"fp32 spread: {describe_variant(variant)}")
        task = source.spec.task
        spread: float | None
        try:
            run(variant, Path(tmp) / "variant.npy", timed=False, keep=False)
            variant_out = load_outputs(Path(tmp) / "variant.npy")
            spread_note = describe_variant(variant)
            if isinstance(variant_out, Detections):  # boxes: judged where fp32 reordering reproduces them
                measured, left_out = detection.judge_reproducible(measured, variant_out, gate)
                spread, spread_note = None, f"{spread_note}; {left_out}"
            else:
                spread = relative_error(measured[0][1], variant_out)
        except HpiError as exc:
            applies = "every image is judged" if task == "detection" else "the floor applies"
            spread, spread_note = None, f"not measured ({str(exc).splitlines()[-1][:200]}): {applies}"
        reference, note = trusted_reference(task, [(cand, out) for cand, out, _, _ in measured], gate)
        if note:  # the reference was outvoted: its spread says nothing about the agreeing backends
            spread, spread_note = None, "not used: the reference was outvoted; the floor applies"
        bound = fp32_bound(gate, spread)
        results: list[CandidateResult] = []
        first: dict[int, Round] = {}
        for cand, output, first_round, build_s in measured:
            acc = compare_outputs(task, reference, output, cand.precision, gate, max_rel_fp32=bound)
            status = "passed" if acc.passed else "rejected"
            why = acc.why if not (note and cand == ref_cand) else f"{acc.why}; {note}"
            results.append(CandidateResult(cand, status, why, first_round.timing, acc, build_s,
                                           e2e_timing=first_round.e2e))
            first[id(results[-1])] = first_round
        # Rounds 2..n: the reference and every passing candidate again, interleaved, so that a noisy neighbour
        # slows all of them in the same round rather than one candidate's whole measurement; every other round in
        # reverse order, so that no candidate always follows the same one.
        timings = {id(r): [first[id(r)]] for r in results if r.status == "passed" or r.candidate == ref_cand}
        ref_id = next(id(r) for r in results if r.candidate == ref_cand)
        started, deadline, n = time.monotonic(), None, 1
        while True:
            n += 1
            if n > rounds:  # the first rounds are done: more only while an interval straddles the line
                deadline = deadline or time.monotonic() + EXTRA_TIME_FACTOR * (time.monotonic() - started)
                open_ids = undecided(timings, ref_id)
                if n > max_rounds or not open_ids or time.monotonic() > deadline:
                    break
                timed_now = {ref_id, *open_ids}
            else:
                timed_now = set(timings)
            for r in (results[::-1] if n % 2 == 0 else results):
                if id(r) not in timings or id(r) not in timed_now:
                    continue
                if progress:
                    progress(f"round {n}/{rounds if n <= rounds else max_rounds}: {r.candidate.label}")
                try:
                    answer = run(r.candidate, None)
                except HpiError as exc:
                    if r.candidate == ref_cand:
                        raise
                    del timings[id(r)]
                    failed.append(dataclasses.replace(r, status="failed",
                                                      reason=f"round {n}: {str(exc).splitlines()[-1][:300]}"))
                    continue
                timings[id(r)].append(Round.from_answer(answer))
    results = [r for r in results if r.status != "passed" or id(r) in timings]
    results = [with_rounds(r, timings[id(r)]) if id(r) in timings else r for r in results]
    results += failed
    for key, reason in skipped.items():
        results.append(CandidateResult(Candidate.unavailable(key), "unavailable", reason))
    results = [dataclasses.replace(r, int8_overflow=int8_overflow(r.candidate, device)) for r in results]
    passed = [r for r in results if r.status == "passed"]
    if not passed:
        raise HpiError(f"no candidate for {source.name} on {device} passed the accuracy gate: "
                       + "; ".join(f"{r.candidate.label}: {r.reason}" for r in results))
    reference_result = next(r for r in results if r.candidate == ref_cand)
    intervals = {id(r): ratio_interval(reference_result, r) for r in passed if r is not reference_result}
    best, why = pick_winner(reference_result, passed)
    results = [dataclasses.replace(r, ratio_interval=intervals.get(id(r)),
                                   **({"status": "winner", "reason": f"{why}; {r.reason}"} if r is best else {}))
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
        judged_on=judged_on(gate_images),
        calibration=calibration_set(hpi_config.calibration_data).label
        if any(r.candidate.precision == "int8" for r in results if r.status != "unavailable") else "",
    )


@dataclass(frozen=True)
class Round:
    """One timed call of a candidate in one round: inference alone, end to end, and the CPU others used."""

    timing: Timing
    e2e: Timing | None
    other_cores: float | None

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> Round:
        return cls(Timing(**answer["timing"]), Timing(**answer["e2e_timing"]) if answer.get("e2e_timing") else None,
                   answer.get("other_cores"))

    @property
    def decisive_ms(self) -> float:
        """What the choice compares: end to end where measured, else inference."""
        return (self.e2e or self.timing).p50_ms


def with_rounds(result: CandidateResult, rounds: list[Round]) -> CandidateResult:
    """``result`` with every round kept and the median round's timings as its own."""
    median = median_round(rounds)
    return dataclasses.replace(
        result, timing=median.timing, e2e_timing=median.e2e, rounds_p50_ms=tuple(r.timing.p50_ms for r in rounds),
        rounds_e2e_p50_ms=tuple(r.e2e.p50_ms for r in rounds if r.e2e) if all(r.e2e for r in rounds) else (),
        rounds_other_cores=tuple(r.other_cores for r in rounds) if all(r.other_cores is not None for r in rounds)
        else ())


def median_round(rounds: list[Round]) -> Round:
    """The round whose decisive p50 (end to end where measured) is the median (the lower middle one for an even
    count): a real measurement, not a mix."""
    return sorted(rounds, key=lambda r: r.decisive_ms)[(len(rounds) - 1) // 2]


def bootstrap_interval(ratios: list[float] | tuple[float, ...], confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """(low, estimate, high): the geometric mean of ``ratios`` and its percentile bootstrap interval. Ratios are
    averaged as logarithms, so 0.5 and 2.0 cancel. Seeded: the same rounds give the same interval."""
    logs = np.log(np.asarray(ratios, dtype=np.float64))
    if logs.size == 0:
        raise InvalidConfigError("bootstrap_interval: no ratios")
    means = np.random.default_rng(seed).choice(logs, size=(resamples, logs.size), replace=True).mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(np.exp(low)), float(np.exp(logs.mean())), float(np.exp(high))


def paired_rounds(reference: CandidateResult | list[Round], candidate: CandidateResult | list[Round]
                  ) -> tuple[list[float], list[float], str]:
    """The reference's and the candidate's decisive p50 of each round both ran (a candidate's rounds are the first
    ones: it leaves the extra rounds once decided), end to end where both were timed so, else inference."""
    def series(x: CandidateResult | list[Round]) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if isinstance(x, CandidateResult):
            return x.rounds_p50_ms, x.rounds_e2e_p50_ms
        e2e = tuple(r.e2e.p50_ms for r in x if r.e2e) if all(r.e2e for r in x) else ()
        return tuple(r.timing.p50_ms for r in x), e2e

    (ref_inf, ref_e2e), (inf, e2e) = series(reference), series(candidate)
    if ref_e2e and e2e:
        n = min(len(ref_e2e), len(e2e))
        return list(ref_e2e[:n]), list(e2e[:n]), "end to end"
    n = min(len(ref_inf), len(inf))
    return list(ref_inf[:n]), list(inf[:n]), "inference"


def ratio_interval(reference: CandidateResult | list[Round], candidate: CandidateResult | list[Round]
                   ) -> RatioInterval | None:
    """The candidate's :class:`RatioInterval` against the reference from their paired rounds (None without any)."""
    ref, cand, path = paired_rounds(reference, candidate)
    if not ref:
        return None
    low, estimate, high = bootstrap_interval([c / r for c, r in zip(cand, ref)])
    return RatioInterval(low, estimate, high, len(ref), path, CONFIDENCE, 1 - MIN_GAIN)


def undecided(timings: dict[int, list[Round]], ref_id: int) -> set[int]:
    """The candidates (ids in ``timings``) whose interval against the reference (``ref_id``) straddles the line."""
    out = set()
    for key, rounds in timings.items():
        interval = ratio_interval(timings[ref_id], rounds) if key != ref_id else None
        if interval and interval.verdict == "undecided":
            out.add(key)
    return out


def pick_winner(reference: CandidateResult, passed: list[CandidateResult]) -> tuple[CandidateResult, str]:
    """The winner among ``passed`` and why. The reference (normal mode) is kept unless a candidate is faster with
    confidence: the :data:`CONFIDENCE` bootstrap interval of its per-round ratio to the reference (paired rounds,
    so a noisy neighbour slows both alike; end to end, the path users run, where both were timed so) lies wholly
    at least :data:`MIN_GAIN` below 1. Among those, the lowest ratio wins. A rejected reference (outvoted by the
    other fp32 backends) leaves the fastest passing candidate."""
    if reference.status != "passed":
        best = min(passed, key=lambda r: r.decisive_p50_ms)
        return best, "fastest passing candidate (the reference did not pass)"
    intervals = [(r, ratio_interval(reference, r)) for r in passed if r is not reference]
    confident = [(r, i) for r, i in intervals if i is not None and i.verdict == "faster"]
    if not confident:
        closest = min((i for _, i in intervals if i is not None), key=lambda i: i.estimate, default=None)
        best_seen = f"; closest: {closest.describe()}" if closest else ""
        return reference, (f"normal mode kept: no passing candidate's {CONFIDENCE:.0%} interval of candidate/normal "
                           f"lies below {1 - MIN_GAIN:.2f}{best_seen}")
    best, interval = min(confident, key=lambda c: c[1].estimate)
    return best, (f"fastest passing candidate, {interval.describe()}: at least {MIN_GAIN:.0%} faster than normal "
                  f"mode with {CONFIDENCE:.0%} confidence")


def describe_variant(variant: Candidate) -> str:
    """What the reordering variant changed, for the record: ``paddle[fp32] enable_onednn=False threads=1``."""
    changed = {k: v for k, v in variant.config.items() if k in ("enable_onednn", "graph_optimization", "threads")}
    return " ".join([variant.label, *(f"{k}={v}" for k, v in changed.items())])
