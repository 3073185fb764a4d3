"""``tune``: from a model and a latency budget to the deployment that serves the most requests inside it.

1. The gate-passing candidates of measured selection (backend x precision, the cached decision), fastest first.
2. The hill-climb (:class:`hpi.tune.search.HillClimb`) over the target's knobs (the cores split, max batch size,
   batching window, ...), each deployment measured through the target's real server: ``hpi serve``
   (:class:`hpi.tune.measure.ServeMeasurer`, ``--engine ray`` for Ray Serve) or ``tritonserver``
   (:class:`hpi.tune.triton.TritonMeasurer`), bounded by the time budget and resumable from ``tune-progress.json``.
3. The best deployment inside the budget measured once more, longer, at the concurrency it was chosen at: the
   figure the record keeps (the search's own figure is the best of many noisy ones, which overstates it).
4. The record (``tune.json``, also cached in the engine cache), the pipeline it serves, and the report.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from hpi.cache import EngineCache, cache_key
from hpi.config import HpiConfig
from hpi.cpu import cpu_count
from hpi.device import parse_device
from hpi.errors import InvalidConfigError
from hpi.loading import locate_model
from hpi.selection.decision import cached_selection
from hpi.selection.record import SelectionRecord
from hpi.source import ModelSource
from hpi.tune import record as records
from hpi.tune import report
from hpi.tune.measure import LoadPlan, ServeMeasurer, explicit_arguments, serve_arguments
from hpi.tune.search import (
    RAY_KNOBS,
    SERVE_KNOBS,
    TRITON_KNOBS,
    Deployment,
    Engine,
    HillClimb,
    Measurement,
    SearchState,
    shortfall,
)
from hpi.tune.triton import ENGINE_BACKEND, TritonMeasurer
from hpi.tune.triton import THROUGH as TRITON_THROUGH

logger = logging.getLogger(__name__)

SEARCH = "hill-climb over ordered knobs"
RAY_THROUGH = "Ray Serve (hpi serve --engine ray on a local loopback cluster, a fresh one per deployment)"
CONFIRM_FACTOR = 3  # the confirmation run measures this many times a search level's seconds
CONFIRM_TRIES = 3  # deployments confirmed at most, best first, until one stays inside the budget


@dataclass(frozen=True)
class TuneResult:
    """What ``tune`` found: the record (as written), where it went, and whether the budget was met."""

    record: dict[str, Any]
    output: Path
    met: bool  # inside the budget in the search and when confirmed
    message: str  # one paragraph for the person who asked
    from_cache: bool = False


def gate_passing(selection: SelectionRecord) -> list[Engine]:
    """The candidates that passed the accuracy gate (the winner included), fastest first (end to end p50)."""
    ok = [r for r in selection.results if r.status in ("winner", "passed")
          and not r.candidate.config.get("use_tensorrt")]
    ok.sort(key=lambda r: r.decisive_p50_ms)
    return [Engine(r.candidate.backend, r.candidate.precision, round(r.decisive_p50_ms, 3)) for r in ok]


def write_pipeline(path: Path, model: str, model_dir: Path) -> Path:
    """The image_classification pipeline YAML the tuned servers run."""
    cfg = {"pipeline_name": "image_classification",
           "Pipeline": {"model": model, "model_dir": str(model_dir), "device": "cpu", "batch_size": 1}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def commands(output: Path, rec: dict[str, Any], *, host: str, port: int, model_dir: Path | None = None
             ) -> dict[str, str]:
    """The commands that run a record's deployment: for serve, ``hpi serve`` with ``--tuned`` and spelled out (fp32
    only); for a Triton record measured through tritonserver, the ``hpi export`` that writes that repository."""
    pipeline, tuned = output / "pipeline.yaml", output / records.RECORD_FILE
    if rec["target"] == "triton":
        if "triton" not in rec:  # measured through the hpi serve stand-in: no repository variant was measured
            return {}
        where = ["--model-dir", str(model_dir)] if model_dir is not None else []
        return {"export_command": shlex.join([
            "hpi", "export", "--format", "triton", "--model", rec["model"], *where, "--tuned", str(tuned),
            "--engine-backend", rec["triton"]["engine_backend"], "--output", str(output / "triton-repository")])}
    out = {"serve_command": shlex.join(["hpi", "serve", *serve_arguments(pipeline, tuned, host=host, port=port)])}
    explicit = explicit_arguments(pipeline, rec, host=host, port=port)
    if explicit is not None:
        out["serve_command_explicit"] = shlex.join(["hpi", "serve", *explicit])
    return out


def tune(model: str, *, model_dir: str | os.PathLike[str] | None = None, budget_ms: float, percentile: float = 99.0,
         objective: str = "throughput", target: str = "serve", concurrency: Sequence[int] = (1, 2, 4, 8, 16),
         time_budget_s: float = 300.0, output: str | os.PathLike[str] = "tune", level_seconds: float = 2.0,
         host: str = "127.0.0.1", port: int = 8080, cache_dir: str | os.PathLike[str] | None = None,
         remeasure: bool = False, progress: Callable[[str], None] | None = None) -> TuneResult:
    """Find the deployment of ``model`` with the most requests per second whose ``percentile`` latency is inside
    ``budget_ms``, measured under load on loopback through the target's server.

    Args:
        model: the model's name (the store's, or the zoo's: built with seeded weights when absent).
        model_dir: its inference directory instead of the store.
        budget_ms: the latency budget.
        percentile: the latency percentile the budget bounds (99: p99).
        objective: what is maximised inside the budget; "throughput" is the one there is.
        target: "serve" (measured through ``hpi serve``), "triton" (through a real ``tritonserver`` on the
            Python-engine repository where nvidia-pytriton's server runs, else ``hpi serve`` standing in) or "ray"
            (through Ray Serve, ``hpi serve --engine ray``); the record's ``measured_through`` says which.
        concurrency: client connections per load level, ascending.
        time_budget_s: no new measurement starts past this (selection, if not cached yet, counts too).
        output: the directory of the record, the pipeline, the report and the servers' log.
        level_seconds: measured seconds per load level.
        host, port: where the printed command listens.
        cache_dir: the engine cache (selection's decision and the finished record); default the user's.
        remeasure: ignore a cached record (an interrupted run's measurements are still reused).
        progress: called with one line per step.

    Raises:
        InvalidConfigError: a bad budget, percentile, concurrency, objective or target.
    """
    show = progress or (lambda line: None)
    started = time.monotonic()
    concurrency = tuple(sorted(set(int(c) for c in concurrency)))
    if not budget_ms > 0:
        raise InvalidConfigError(f"the latency budget must be positive, got {budget_ms!r} ms")
    if not 0 < percentile <= 100:
        raise InvalidConfigError(f"the percentile must be in (0, 100], got {percentile!r}")
    if not concurrency or concurrency[0] < 1 or concurrency[-1] > 256:
        raise InvalidConfigError(f"concurrency levels must be in [1, 256], got {list(concurrency)}")
    if objective != "throughput":
        raise InvalidConfigError(f"objective {objective!r} is not known; available: throughput")
    if target not in records.TARGETS:
        raise InvalidConfigError(f"target {target!r} is not known; available: {', '.join(records.TARGETS)}")
    out = Path(output).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = locate_model(model, model_dir, build=True)
    given_dir = source.directory if model_dir is not None else None
    device = parse_device("cpu")
    cache = EngineCache(cache_dir)
    cores = cpu_count()
    through = measured_through(target)
    parts = records.tune_key(source, device, target=target, budget_ms=budget_ms, percentile=percentile,
                             objective=objective, concurrency=concurrency, measured_through=through)
    key = cache_key(parts)
    write_pipeline(out / "pipeline.yaml", model, source.directory)

    if not remeasure:
        cached = records.cached_record(cache, parts)
        if cached is not None:
            show(f"a record for this model, hardware, library versions and budget is cached ({key}); "
                 "--remeasure measures again")
            if cached["chosen"]["met_budget"]:
                cached.update(commands(out, cached, host=host, port=port, model_dir=given_dir))
            return _finish(cached, out, from_cache=True)

    show(f"selection: the gate-passing candidates of {model} (cached after the first run)")
    selection = cached_selection(source, device, HpiConfig(), cache=cache, batch_size=1, progress=show)
    engines = gate_passing(selection)
    show("candidates: " + ", ".join(f"{e.backend}[{e.precision}] {e.p50_ms:.2f} ms" for e in engines))
    plan = LoadPlan(concurrency=concurrency, seconds=level_seconds, percentile=percentile, budget_ms=budget_ms)
    measurer, engines, knobs = _measurer(target, through, model, source, selection, engines, cache, plan, out, show)
    resumed = [Measurement.from_dict(m) for m in records.read_progress(out / records.PROGRESS_FILE, parts)]
    state = SearchState({m.deployment.key: m for m in resumed})
    if state.measurements:
        show(f"resuming: {len(state.measurements)} deployments measured by an earlier run of this key")
    # a server start, the levels, the last one longer, and one step down as long
    confirm_s = plan.estimate_s() + (2 * CONFIRM_FACTOR - 1) * level_seconds

    def measure_and_save(d: Deployment) -> Measurement:
        m = measurer(d)
        done = [x.to_dict() for x in state.measurements.values()] + [m.to_dict()]
        records.write_json(out / records.PROGRESS_FILE, {"cache_key": key, "key": parts, "measurements": done})
        return m

    climb = HillClimb(engines, cores, budget_ms, measure_and_save,
                      time_budget_s=max(0.0, time_budget_s - (time.monotonic() - started) - confirm_s),
                      estimate_s=plan.estimate_s(), state=state, progress=show, knobs=knobs)
    show(f"search: {SEARCH} through {measurer.through}; {climb.describe_space()}"
         + (" (a small space: 2 cores split only as 1x2 and 2x1)" if cores <= 2 else ""))
    climb.run()
    show(f"search stopped: {state.stopped}")
    best = state.best(budget_ms)
    if best is None:
        raise InvalidConfigError("no deployment could be measured in the time budget; give a longer --time-budget")
    confirmed = None
    # The search's best is the best of many short, noisy runs; a longer run confirms it. The points inside the budget
    # (a deployment at a number of clients) are confirmed best first until one holds: at most CONFIRM_TRIES, so a
    # deployment whose p99 sat near the budget at 8 clients in a short run can still be confirmed at 4.
    inside = sorted(((m, p) for m in state.measurements.values() for p in m.points if p.within(budget_ms)),
                    key=lambda mp: mp[1].throughput_rps, reverse=True)
    for candidate, point in inside[:CONFIRM_TRIES]:
        if confirmed is not None and time.monotonic() - started + confirm_s > time_budget_s:
            break  # no time left to confirm another
        check = _confirm(measurer, candidate, point.concurrency, plan, show)
        held = bool(check.points) and check.points[-1].within(budget_ms)
        if confirmed is None or held:
            best, confirmed = candidate, check
        if held:
            if check.points[-1].concurrency < point.concurrency:
                show(f"{candidate.deployment.key} was over the budget at {_clients(point.concurrency)} when confirmed "
                     f"and held it at {_clients(check.points[-1].concurrency)}")
            break
        show(f"{candidate.deployment.key} at {_clients(point.concurrency)} was over the budget when confirmed")
    rec = _record(model, source.content_hash, target, engines, state, best, confirmed, parts, key, budget_ms,
                  percentile, objective, climb, cores, selection, time.monotonic() - started, measurer)
    if rec["chosen"]["met_budget"]:
        rec.update(commands(out, rec, host=host, port=port, model_dir=given_dir))
    # cached only when final: a search the time budget cut short resumes from its progress file instead, and a
    # deployment that did not hold the budget when confirmed is worth measuring again
    if state.stopped.startswith("converged") and rec["chosen"].get("confirmed_within_budget") is not False:
        records.cache_record(cache, parts, rec)
    return _finish(rec, out)


class Measurer(Protocol):
    """Measures one deployment under the plan's load (:class:`~hpi.tune.measure.ServeMeasurer`,
    :class:`~hpi.tune.triton.TritonMeasurer`)."""

    plan: LoadPlan
    through: str  # what the load went through, for the record

    def __call__(self, d: Deployment) -> Measurement: ...

    def with_plan(self, plan: LoadPlan) -> Measurer: ...


def measured_through(target: str) -> str:
    """What ``target``'s deployments are measured through on this machine (part of the record's key: a record
    measured through a stand-in is not one measured through the real server)."""
    if target == "triton":
        from hpi.scaleout.triton.environment import unsupported_reason

        reason = unsupported_reason()
        return TRITON_THROUGH if reason is None else f"hpi serve (a stand-in: tritonserver cannot run here: {reason})"
    return RAY_THROUGH if target == "ray" else "hpi serve"


def _measurer(target: str, through: str, model: str, source: ModelSource, selection: SelectionRecord,
              engines: list[Engine], cache: EngineCache, plan: LoadPlan, out: Path, show: Callable[[str], None]
              ) -> tuple[Measurer, list[Engine], tuple[str, ...]]:
    """What measures ``target``'s deployments, the engines it can run, and the knobs searched.

    * serve: ``hpi serve`` on every gate-passing engine; workers x threads (x OpenVINO streams), event-loop
      niceness, engine, max batch, window.
    * triton: a real ``tritonserver`` where this machine runs nvidia-pytriton's, on the Python-engine repository
      (ONNX Runtime fp32, which is what a CPU repository runs whatever the decision); instances x threads, max
      batch, queue delay. Elsewhere ``hpi serve`` stands in, and the record says why.
    * ray: Ray Serve (``hpi serve --engine ray``, a local cluster per deployment): replicas x CPUs each, engine,
      max batch, window.
    """
    if through == TRITON_THROUGH:
        ort = next((e for e in engines if (e.backend, e.precision) == ("onnxruntime", "fp32")),
                   Engine("onnxruntime", "fp32", float("inf")))
        show("triton: measured through a real tritonserver (nvidia-pytriton's, Python backend) on the "
             "--engine-backend python repository: ONNX Runtime fp32, the engine a CPU repository runs")
        return TritonMeasurer(source, selection, cache, plan, out / "servers", progress=show), [ort], TRITON_KNOBS
    if target == "ray":
        show(f"ray: measured through {through}")
    # the servers build their engines into the same cache as the selection's
    serve = ServeMeasurer(model, out / "pipeline.yaml", plan, out / "servers", env={"HPI_CACHE_DIR": str(cache.root)},
                          through=through, target="ray" if target == "ray" else "serve")
    return serve, engines, RAY_KNOBS if target == "ray" else SERVE_KNOBS


def _confirm(measurer: Measurer, best: Measurement, clients: int, plan: LoadPlan,
             show: Callable[[str], None]) -> Measurement:
    """``best`` once more, in a fresh server, loaded as in the search up to ``clients`` (the lower levels first: a
    server that has run them is what the search measured), that level ``CONFIRM_FACTOR`` times longer; while that
    misses the budget, the next lower level as long (a p99 near the budget over a short level often is over it in a
    longer one). Its last point is the confirmation."""
    show(f"confirming {best.deployment.key} at {_clients(clients)}")
    longer = dataclasses.replace(plan, concurrency=tuple(c for c in plan.concurrency if c <= clients),
                                 stop_early=False, last_level_seconds=plan.seconds * CONFIRM_FACTOR, step_down=True)
    return measurer.with_plan(longer)(best.deployment)


def _clients(n: int) -> str:
    return f"{n} client{'s' if n > 1 else ''}"


def _record(model: str, model_hash: str, target: str, engines: list[Engine], state: SearchState,
            best: Measurement, confirmed: Measurement | None, parts: dict[str, Any], key: str, budget_ms: float,
            percentile: float, objective: str, climb: HillClimb, cores: int, selection: SelectionRecord,
            elapsed_s: float, measurer: Measurer) -> dict[str, Any]:
    d = best.deployment
    confirm_point = confirmed.points[-1] if confirmed is not None and confirmed.points else None
    # the search's figures at the confirmed number of clients (its best level when nothing was confirmed)
    point = best.best_within(budget_ms)
    if confirm_point is not None:
        point = next((p for p in best.points if p.concurrency == confirm_point.concurrency), point)
    met = point is not None
    chosen: dict[str, Any] = {"key": d.key, "met_budget": met}
    if point is not None:
        chosen |= {"concurrency": point.concurrency, "search_throughput_rps": point.throughput_rps,
                   "search_latency_ms": point.latency_ms}
        if confirm_point is not None:
            chosen |= {"throughput_rps": confirm_point.throughput_rps, "latency_ms": confirm_point.latency_ms,
                       "p50_ms": confirm_point.p50_ms, "errors": confirm_point.errors,
                       "confirmed_within_budget": confirm_point.within(budget_ms)}
        else:
            chosen |= {"throughput_rps": point.throughput_rps, "latency_ms": point.latency_ms,
                       "p50_ms": point.p50_ms, "errors": point.errors, "confirmed_within_budget": None}
    else:
        near = best.closest()
        chosen |= {"closest_latency_ms": near.latency_ms if near else None,
                   "closest_concurrency": near.concurrency if near else None,
                   "over_budget_ms": round(near.latency_ms - budget_ms, 2) if near else None,
                   "shortfall": shortfall(best, budget_ms)}
    return {
        "kind": records.KIND, "version": records.VERSION, "target": target, "model": model,
        "backend": d.backend, "precision": d.precision, "deployment": d.deployment_dict(),
        "visualize": False, "loop_niceness": d.loop_niceness,
        "budget_ms": budget_ms, "percentile": percentile, "objective": objective,
        "measured_through": measurer.through,
        "chosen": chosen,
        "search": {"method": SEARCH, "space_size": climb.space_size(), "measured": len(state.measurements),
                   "measured_now": climb.new, "stopped": state.stopped, "seconds": round(elapsed_s, 1),
                   "cores": cores, "small_space": cores <= 2,
                   "engines": [dataclasses.asdict(e) for e in engines],
                   "selection_winner": selection.winner.candidate.label},
        "measurements": [m.to_dict() for m in state.measurements.values()],
        "confirmation": confirmed.to_dict() if confirmed is not None else None,
        "model_hash": model_hash, "cache_key": key, "key": parts, "created": time.time(),
    } | ({"triton": {"engine_backend": ENGINE_BACKEND, "server_version": measurer.server_version}}
         if isinstance(measurer, TritonMeasurer) else {})


def _finish(rec: dict[str, Any], out: Path, from_cache: bool = False) -> TuneResult:
    records.write_json(out / records.RECORD_FILE, rec)
    report.write_report(rec, out)
    chosen = rec["chosen"]
    # a deployment inside the budget in the search but over it when confirmed did not meet it: exit status 1 too
    met = bool(chosen["met_budget"]) and chosen.get("confirmed_within_budget") is not False
    pct = f"p{rec['percentile']:g}"
    if chosen["met_budget"]:
        clients = _clients(chosen["concurrency"])
        message = (f"{chosen['key']}: {chosen['throughput_rps']:.1f} req/s at {clients}, "
                   f"{pct} {chosen['latency_ms']:.2f} ms inside the {rec['budget_ms']:g} ms budget")
        if chosen.get("confirmed_within_budget") is False:
            message = (f"{chosen['key']}: {chosen['search_throughput_rps']:.1f} req/s at {clients}, {pct} "
                       f"{chosen['search_latency_ms']:.2f} ms inside the {rec['budget_ms']:g} ms budget in the search, "
                       f"but {pct} {chosen['latency_ms']:.2f} ms when confirmed: this machine is too noisy for the "
                       "budget; run again on a quieter machine or widen the budget")
    else:
        message = f"no deployment met the {pct} budget of {rec['budget_ms']:g} ms: {chosen['shortfall']}"
    return TuneResult(rec, out, met, message, from_cache)
