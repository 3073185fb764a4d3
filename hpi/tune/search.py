"""The search: deployments, what one measurement of a deployment found, the budget rule, and the hill-climb.

Nothing here starts a server: :class:`HillClimb` calls a ``measure(deployment) -> Measurement`` function it is
given (:mod:`hpi.tune.measure` for real, synthetic functions in the tests).

The budget rule: a deployment's worth is the highest throughput it reached at any client concurrency whose
chosen-percentile latency was inside the budget and that had no errors (:meth:`Measurement.best_within`). A
deployment that met the budget at no concurrency ranks below every one that did, by how little it missed it.

The search is a hill-climb over ordered knobs (coordinate ascent): starting from ``hpi serve``'s defaults on the
selection's winner, it steps the split of the cores (workers x threads, and on an OpenVINO engine x streams per
worker) and (``hpi serve`` only) the server's event-loop niceness, tries each backend candidate, then steps each
other ordered knob (max batch size, batching window) up and down from the best point so far while that improves,
and repeats the pass until a pass changes nothing or the time budget is spent. Every deployment is measured at most once (the record resumes).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpi.errors import InvalidConfigError

MAX_BATCH_SIZES = (1, 2, 4, 8, 16)  # the ordered values of the max batch size knob
LOOP_NICENESS = (0, 15)  # the ordered values of the server's event-loop niceness knob (15: hpi serve's default)
BATCH_DELAYS_MS = (0.5, 1.0, 2.0, 4.0, 8.0)  # the ordered values of the batching window knob
STREAMS = (None, 2, 4)  # the ordered values of OpenVINO's streams per instance (None: one), up to its threads
# The knobs each target searches, in the order a pass steps them. "instances" is the split of the cores: workers x
# threads, and on an OpenVINO engine x streams (the same cores split inside one process). It comes first: on a small
# machine shared with other work, how the cores are split moved latency most (e.g. PP-LCNet on 2 busy cores: p99
# 1.5-30x lower with 2 workers of 1 thread than 1 of 2).
SERVE_KNOBS = ("instances", "loop_niceness", "engine", "max_batch_size", "batch_delay_ms")
TRITON_KNOBS = ("instances", "engine", "max_batch_size", "batch_delay_ms")  # Triton has no event loop of hpi's
# Ray Serve: the replicas keep hpi serve's loop niceness (each Ray deployment measured costs a cluster start, so the
# search there is kept to the knobs that moved throughput most)
RAY_KNOBS = TRITON_KNOBS
KNOB_NAMES = {"instances": "worker split", "loop_niceness": "loop niceness", "engine": "engine",
              "max_batch_size": "max batch", "batch_delay_ms": "window"}


@dataclass(frozen=True)
class Deployment:
    """One deployment of a model: what runs it and how it is spread over the cores.

    The field names of the ``deployment`` object in a tune record (instances = ``hpi serve`` workers, Triton
    instances, Ray replicas), plus the engine (backend, precision) that is not a deployment knob there.
    """

    backend: str
    precision: str
    instances: int  # server processes (serve), model instances (triton), replicas (ray)
    threads: int  # engine threads per instance; instances x threads = the cores
    max_batch_size: int  # images per engine call
    batch_delay_ms: float  # how long a batch that is not full waits for more (0 with max_batch_size 1: never waits)
    streams: int | None = None  # OpenVINO streams per instance where the target runs several requests at once
    # hpi serve --loop-niceness: how far below the engine threads the event loop runs. The server's default (15)
    # keeps HTTP work from preempting inference on a dedicated machine; on one shared with other work the starved
    # loop can add tens of ms (PP-LCNet on 2 busy cores, 3 interleaved rounds: p99 at one client 21-24 ms at 0,
    # 21-121 ms at 15).
    loop_niceness: int = 15

    def __post_init__(self) -> None:
        if self.instances < 1 or self.threads < 1 or self.max_batch_size < 1 or self.batch_delay_ms < 0:
            raise InvalidConfigError(f"a deployment needs positive instances, threads and max batch size and a "
                                     f"non-negative batch delay, got {self}")

    @property
    def key(self) -> str:
        """A stable name for the record (measurements are keyed by it)."""
        return (f"{self.backend}[{self.precision}] {self.instances}x{self.threads}t b{self.max_batch_size} "
                f"w{self.batch_delay_ms:g}" + (f" s{self.streams}" if self.streams else "")
                + (f" n{self.loop_niceness}" if self.loop_niceness != 15 else ""))

    def deployment_dict(self) -> dict[str, Any]:
        """The agreed ``deployment`` object of a tune record (every target's keys)."""
        return {"instances": self.instances, "threads": self.threads, "max_batch_size": self.max_batch_size,
                "batch_delay_ms": self.batch_delay_ms, "preferred_batch_sizes": preferred_batch_sizes(
                    self.max_batch_size), "streams": self.streams}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Deployment:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def preferred_batch_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes a dynamic batcher should prefer: the powers of two from half the max batch size up to it,
    and the max itself ([4, 8] for 8; [] for 1, where there is nothing to prefer)."""
    if max_batch_size <= 1:
        return []
    sizes = {b for b in (2 ** k for k in range(12)) if max_batch_size / 2 <= b <= max_batch_size}
    return sorted(sizes | {max_batch_size})


def splits(cores: int) -> list[tuple[int, int]]:
    """(instances, threads each) that use every core once: the divisors of ``cores``, fewest instances first."""
    return [(n, cores // n) for n in range(1, cores + 1) if cores % n == 0]


def streams_for(d: Deployment) -> list[int | None]:
    """The streams values that can matter for ``d``: OpenVINO only, at most one stream per engine thread."""
    if d.backend != "openvino":
        return [None]
    return [s for s in STREAMS if s is None or s <= d.threads]


def normalised(d: Deployment) -> Deployment:
    """``d`` with knobs that cannot matter set to one value, so that equal deployments measure once: a batch of
    one never waits for a second item, so its delay is 0; streams are OpenVINO's, and at most one per thread."""
    if d.max_batch_size == 1:
        d = dataclasses.replace(d, batch_delay_ms=0.0)
    if d.streams is not None and d.streams not in streams_for(d):
        d = dataclasses.replace(d, streams=None)
    return d


@dataclass(frozen=True)
class Point:
    """One load level of one measurement: ``concurrency`` clients in a loop for ``seconds``."""

    concurrency: int
    throughput_rps: float  # successful requests per second
    latency_ms: float | None  # the chosen percentile (None: no request succeeded)
    p50_ms: float | None
    requests: int
    errors: int
    seconds: float

    def within(self, budget_ms: float) -> bool:
        return self.errors == 0 and self.latency_ms is not None and self.latency_ms <= budget_ms


@dataclass(frozen=True)
class Measurement:
    """A deployment under each load level measured (ascending concurrency)."""

    deployment: Deployment
    points: tuple[Point, ...]
    seconds: float = 0.0  # wall time it took, server start included
    failure: str = ""  # why the deployment could not be measured ("" when it was)

    def best_within(self, budget_ms: float) -> Point | None:
        """The highest-throughput load level inside the budget, or None."""
        inside = [p for p in self.points if p.within(budget_ms)]
        return max(inside, key=lambda p: p.throughput_rps) if inside else None

    def closest(self) -> Point | None:
        """The load level with the lowest latency (the nearest this deployment came to any budget)."""
        done = [p for p in self.points if p.latency_ms is not None and p.errors == 0]
        return min(done, key=lambda p: p.latency_ms) if done else None

    def score(self, budget_ms: float) -> tuple[int, float]:
        """What the search maximises: (1, throughput) inside the budget; (0, -latency) outside it; a failed
        measurement ranks last."""
        best = self.best_within(budget_ms)
        if best is not None:
            return 1, best.throughput_rps
        near = self.closest()
        return (0, -near.latency_ms) if near is not None else (-1, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"deployment": self.deployment.to_dict(), "points": [dataclasses.asdict(p) for p in self.points],
                "seconds": round(self.seconds, 2), "failure": self.failure}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        return cls(Deployment.from_dict(d["deployment"]), tuple(Point(**p) for p in d["points"]),
                   d.get("seconds", 0.0), d.get("failure", ""))


@dataclass(frozen=True)
class Engine:
    """A gate-passing backend x precision from selection, with its p50 there (the order the search tries them)."""

    backend: str
    precision: str
    p50_ms: float


@dataclass
class SearchState:
    """What the search has measured so far, in order (the resumable part of the record)."""

    measurements: dict[str, Measurement] = field(default_factory=dict)
    stopped: str = ""  # why the search ended: "converged", "time budget", ...

    def best(self, budget_ms: float) -> Measurement | None:
        ok = list(self.measurements.values())
        return max(ok, key=lambda m: m.score(budget_ms)) if ok else None


class TimeUp(Exception):
    """The time budget is spent (raised inside the search, caught by :meth:`HillClimb.run`)."""


class HillClimb:
    """Coordinate ascent over the ordered knobs, bounded in time, reusing earlier measurements.

    Args:
        engines: the gate-passing candidates, fastest in selection first.
        cores: the cores to spread (instances x threads = cores).
        budget_ms: the latency budget.
        measure: measures one deployment.
        time_budget_s: no new measurement starts after this many seconds (one that started finishes; the first
            one always runs).
        estimate_s: how long one measurement is expected to take; none starts that would end past the budget.
        state: earlier measurements (a resumed record); new ones are added to it.
        progress: called with one line per step.
        clock: seconds (``time.monotonic``; the tests pass a fake one).
    """

    def __init__(self, engines: Sequence[Engine], cores: int, budget_ms: float,
                 measure: Callable[[Deployment], Measurement], *, time_budget_s: float, estimate_s: float = 0.0,
                 state: SearchState | None = None, progress: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, start: Deployment | None = None,
                 knobs: Sequence[str] = SERVE_KNOBS) -> None:
        unknown = [k for k in knobs if k not in KNOB_NAMES]
        if unknown:
            raise InvalidConfigError(f"unknown knob(s) {unknown}; known: {', '.join(KNOB_NAMES)}")
        self.knobs = tuple(knobs)
        if not engines:
            raise InvalidConfigError("no gate-passing candidate to tune")
        if not budget_ms > 0:
            raise InvalidConfigError(f"the latency budget must be positive, got {budget_ms!r} ms")
        self.engines = list(engines)
        self.cores = cores
        self.budget_ms = budget_ms
        self._measure = measure
        self.time_budget_s = time_budget_s
        self.estimate_s = estimate_s
        self.state = state or SearchState()
        self.progress = progress or (lambda line: None)
        self.clock = clock
        self.started = clock()
        self.start = start or Deployment(engines[0].backend, engines[0].precision, 1, cores, 8, 2.0)
        self.new = 0  # measurements made by this run (not resumed)

    def _knob_values(self, knob: str, d: Deployment) -> list[Deployment]:
        """``d`` with every value of ``knob``, in the knob's order (empty where the knob cannot matter)."""
        if knob == "instances":  # the cores split, coarsest first; OpenVINO's streams split an instance further
            out = []
            for n, t in splits(self.cores):
                split = dataclasses.replace(d, instances=n, threads=t, streams=None)
                out += [dataclasses.replace(split, streams=v) for v in streams_for(split)]
            return out
        if knob == "loop_niceness":
            return [dataclasses.replace(d, loop_niceness=n) for n in LOOP_NICENESS]
        if knob == "engine":
            return [dataclasses.replace(d, backend=e.backend, precision=e.precision) for e in self.engines]
        if knob == "max_batch_size":
            return [dataclasses.replace(d, max_batch_size=b) for b in MAX_BATCH_SIZES]
        if d.max_batch_size == 1:  # a batch of one never waits: no window to tune
            return []
        delay = d.batch_delay_ms or BATCH_DELAYS_MS[2]
        return [dataclasses.replace(d, batch_delay_ms=w) for w in sorted(set(BATCH_DELAYS_MS) | {delay})]

    def space(self) -> set[str]:
        """The keys of the distinct deployments the knobs span here (after :func:`normalised`)."""
        keys: set[str] = set()
        niceness = LOOP_NICENESS if "loop_niceness" in self.knobs else (self.start.loop_niceness,)
        for e, (n, t), nice, b, w in itertools.product(self.engines, splits(self.cores), niceness, MAX_BATCH_SIZES,
                                                       BATCH_DELAYS_MS):
            d = Deployment(e.backend, e.precision, n, t, b, w, loop_niceness=nice)
            for streams in streams_for(d):
                keys.add(normalised(dataclasses.replace(d, streams=streams)).key)
        return keys

    def space_size(self) -> int:
        """How many distinct deployments the knobs span here."""
        return len(self.space())

    def describe_space(self) -> str:
        """The knobs and the size of the space, for a person: "2 engine(s) x 2 worker split(s) of 2 cores x ..."."""
        parts = [f"{len(self.engines)} engine(s)", f"{len(splits(self.cores))} worker split(s) of {self.cores} cores"
                 + (" (OpenVINO: x streams)" if any(e.backend == "openvino" for e in self.engines) else "")]
        parts += [KNOB_NAMES[k] for k in self.knobs if k not in ("engine", "instances")]
        return f"{' x '.join(parts)} = {self.space_size()} deployments"

    def elapsed(self) -> float:
        return self.clock() - self.started

    def measure(self, d: Deployment) -> Measurement:
        d = normalised(d)
        found = self.state.measurements.get(d.key)
        if found is not None:
            return found
        # the first measurement always runs, so that even a spent budget (a slow first selection) gives a result
        if self.state.measurements and self.elapsed() + self.estimate_s > self.time_budget_s:
            raise TimeUp
        index = len(self.state.measurements) + 1
        self.progress(f"[{self.elapsed():5.0f}/{self.time_budget_s:.0f}s] {index}: measuring {d.key}")
        m = self._measure(d)
        self.state.measurements[d.key] = m
        self.new += 1
        best = m.best_within(self.budget_ms)
        near = m.closest()
        self.progress(
            f"[{self.elapsed():5.0f}/{self.time_budget_s:.0f}s] {index}: {d.key}: " + (
                m.failure if m.failure else
                f"{best.throughput_rps:.1f} req/s at {best.concurrency} "
                f"client{'s' if best.concurrency > 1 else ''} inside the budget" if best else
                f"over the budget at every load (closest {near.latency_ms:.1f} ms)" if near else "no success"))
        return m

    def better(self, a: Measurement, b: Measurement | None) -> bool:
        # a must beat b by more than noise to move the climb: 2% in throughput, or any gain in latency
        if b is None:
            return True
        sa, sb = a.score(self.budget_ms), b.score(self.budget_ms)
        if sa[0] != sb[0]:
            return sa[0] > sb[0]
        if sa[0] == 1:
            return sa[1] > sb[1] * 1.02
        return sa[1] > sb[1]

    def _climb_knob(self, current: Measurement, values: list[Deployment]) -> Measurement:
        """Step from the current value along the knob's ordered values, each direction while it improves."""
        keys = [normalised(v).key for v in values]
        here = keys.index(current.deployment.key) if current.deployment.key in keys else 0
        best = current
        for step in (1, -1):
            i = here + step
            while 0 <= i < len(values):
                m = self.measure(values[i])
                if not self.better(m, best):
                    break
                best = m
                i += step
            if best is not current:
                break  # it improved going up: no need to look down
        return best

    def run(self) -> SearchState:
        """Climb until a whole pass over the knobs changes nothing, or the time is up."""
        try:
            current = self.measure(self.start)
            while True:
                before = current.deployment.key
                for knob in self.knobs:  # in order, each from the best deployment so far
                    values = self._knob_values(knob, current.deployment)
                    if not values:
                        continue
                    if knob == "engine":  # unordered: try every candidate
                        for v in values:
                            m = self.measure(v)
                            if self.better(m, current):
                                current = m
                    else:
                        current = self._climb_knob(current, values)
                if current.deployment.key == before:
                    self.state.stopped = "converged: a whole pass over the knobs changed nothing"
                    break
        except TimeUp:
            self.state.stopped = f"time budget of {self.time_budget_s:.0f} s spent"
        return self.state


def shortfall(best: Measurement, budget_ms: float) -> str:
    """How far a deployment that met no budget came: its lowest latency against the budget."""
    near = best.closest()
    if near is None:
        return f"{best.deployment.key} served no request successfully ({best.failure or 'errors'})"
    over = near.latency_ms - budget_ms
    return (f"the closest was {best.deployment.key}: {near.latency_ms:.2f} ms at {near.concurrency} "
            f"client{'s' if near.concurrency > 1 else ''}, {over:.2f} ms ({near.latency_ms / budget_ms:.1f}x) over "
            f"the {budget_ms:g} ms budget")
