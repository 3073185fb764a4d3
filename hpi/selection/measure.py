"""Measured selection: build, run and time every candidate, each in its own process; the fastest that passes wins.

For a model and device, every available candidate (backend x precision) is built through the engine cache, run on
real reference inputs (the built-in photos and their mirrors), checked against the fp32 reference (Paddle
Inference, or ONNX Runtime for ONNX-only models) and timed. :func:`select` returns the
:class:`~hpi.selection.record.SelectionRecord`; :mod:`hpi.selection.decision` caches it.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hpi.backends import get_backend
from hpi.backends.base import Engine
from hpi.cache import EngineCache
from hpi.config import AccuracyGate, HpiConfig
from hpi.device import Device, device_signature, parse_device, resolve_threads
from hpi.errors import BackendUnavailableError, HpiError, InvalidConfigError
from hpi.harness import Timing, run_isolated, time_callable
from hpi.model import ModelSource
from hpi.preprocess.decode import decode_image
from hpi.preprocess.reference import preprocess_batch
from hpi.selection.candidates import Candidate, candidates, reference_candidate
from hpi.selection.gate import compare_outputs, trusted_reference
from hpi.selection.record import CandidateResult, SelectionRecord, library_versions

SAMPLE_IMAGES = Path(__file__).resolve().parent.parent / "data" / "images"
MEASURED_TASKS = ("classification", "embedding")  # what the accuracy gate can judge


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
    """Measure every candidate and pick the fastest that passes ``gate``. Does not read or write the decision cache.

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
    with tempfile.TemporaryDirectory(prefix="hpi-select-") as tmp:
        inputs_path = Path(tmp) / "inputs.npy"
        np.save(inputs_path, inputs)
        for i, cand in enumerate(cands):
            if progress:
                progress(f"[{i + 1}/{len(cands)}] {cand.label}")
            out_path = Path(tmp) / f"out{i}.npy"
            request = {"model_dir": str(source.directory), "device": str(device), "backend": cand.backend,
                       "config": cand.config, "cache_dir": str(cache.root), "inputs": str(inputs_path),
                       "outputs": str(out_path), "batch_size": batch_size, "budget_s": budget_s}
            try:
                answer = run_isolated(f"{__name__}:measure_candidate", request) if isolate \
                    else measure_candidate(request)
            except HpiError as exc:
                if cand == ref_cand:
                    raise
                failed.append(CandidateResult(cand, "failed", str(exc).splitlines()[-1][:300]))
                continue
            measured.append((cand, np.load(out_path), Timing(**answer["timing"]), answer["build_s"]))
    task = source.spec.task
    reference, note = trusted_reference(task, [(cand, out) for cand, out, _, _ in measured], gate)
    results: list[CandidateResult] = []
    for cand, output, timing, build_s in measured:
        acc = compare_outputs(task, reference, output, cand.precision, gate)
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
