"""hpi/tune/search.py: the budget rule and the hill-climb, on synthetic measurements (no server)."""

from __future__ import annotations

import dataclasses

import pytest

from hpi.errors import InvalidConfigError
from hpi.tune.search import (
    TRITON_KNOBS,
    Deployment,
    Engine,
    HillClimb,
    Measurement,
    Point,
    SearchState,
    normalised,
    preferred_batch_sizes,
    shortfall,
    splits,
)

ENGINES = [Engine("onnxruntime", "fp32", 4.0), Engine("openvino", "fp32", 4.5)]


def point(c: int, rps: float, lat: float, errors: int = 0) -> Point:
    return Point(c, rps, lat, lat / 2, int(rps * 2), errors, 2.0)


def test_best_within_takes_the_fastest_level_inside_the_budget():
    d = Deployment("onnxruntime", "fp32", 1, 2, 8, 2.0)
    m = Measurement(d, (point(1, 100, 8), point(2, 180, 12), point(4, 240, 19.9), point(8, 260, 31)))
    assert m.best_within(20).concurrency == 4
    assert m.best_within(10).concurrency == 1
    assert m.best_within(5) is None and m.closest().latency_ms == 8
    assert m.score(20) == (1, 240) and m.score(5) == (0, -8)


def test_a_level_with_errors_is_never_inside_the_budget():
    d = Deployment("onnxruntime", "fp32", 1, 2, 8, 2.0)
    m = Measurement(d, (point(1, 100, 8), point(2, 300, 9, errors=1)))
    assert m.best_within(20).concurrency == 1
    assert Measurement(d, (), failure="did not start").score(20) == (-1, 0.0)


def test_scores_rank_every_feasible_deployment_above_every_infeasible_one():
    d = Deployment("onnxruntime", "fp32", 1, 2, 8, 2.0)
    slow_but_inside = Measurement(d, (point(1, 10, 19),))
    fast_but_over = Measurement(d, (point(1, 1000, 21),))
    assert slow_but_inside.score(20) > fast_but_over.score(20)


def test_knob_helpers():
    assert splits(2) == [(1, 2), (2, 1)] and splits(4) == [(1, 4), (2, 2), (4, 1)]
    assert preferred_batch_sizes(8) == [4, 8] and preferred_batch_sizes(1) == [] and preferred_batch_sizes(6) == [4, 6]
    d = Deployment("openvino", "fp32", 2, 1, 1, 4.0)
    assert normalised(d).batch_delay_ms == 0 and normalised(dataclasses.replace(d, max_batch_size=2)) == \
        dataclasses.replace(d, max_batch_size=2)
    with pytest.raises(InvalidConfigError, match="positive"):
        Deployment("onnxruntime", "fp32", 0, 2, 8, 2.0)
    assert Measurement.from_dict(Measurement(d, (point(1, 5, 5),), 3.0).to_dict()) == Measurement(d, (point(1, 5, 5),),
                                                                                                  3.0)


def synthetic(d: Deployment) -> Measurement:
    """A made-up server: openvino a little faster; 2 workers better; throughput grows with batch up to 8 while
    latency grows with batch and window; 16 clients always over 20 ms."""
    base = 100.0 * (1.1 if d.backend == "openvino" else 1.0) * (1.3 if d.instances == 2 else 1.0) * (
        1.05 if d.loop_niceness == 0 else 1.0)
    gain = min(d.max_batch_size, 8) ** 0.5
    pts = []
    for c in (1, 2, 4, 8, 16):
        rps = base * min(c, gain * 2)
        lat = 4 + 1.2 * d.max_batch_size + d.batch_delay_ms + 1.5 * c
        pts.append(point(c, round(rps, 1), lat))
        if lat > 20:
            break
    return Measurement(d, tuple(pts), 1.0)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_climb_finds_the_best_deployment_inside_the_budget():
    calls = []

    def measure(d):
        calls.append(d.key)
        return synthetic(d)

    climb = HillClimb(ENGINES, 2, 20.0, measure, time_budget_s=1e9)
    state = climb.run()
    assert state.stopped.startswith("converged")
    best = state.best(20.0)
    # the exhaustive answer over the same space
    every = [synthetic(normalised(Deployment(e.backend, e.precision, n, t, b, w, loop_niceness=nice)))
             for e in ENGINES for n, t in splits(2) for b in (1, 2, 4, 8, 16) for w in (0.5, 1, 2, 4, 8)
             for nice in (0, 15)]
    top = max(m.score(20.0) for m in every)
    assert best.score(20.0) == top
    assert best.deployment.backend == "openvino" and best.deployment.instances == 2
    assert best.deployment.loop_niceness == 0
    assert len(calls) == len(set(calls)) < climb.space_size()  # each measured once, fewer than the whole space


def test_the_climb_stops_at_the_time_budget_and_resumes_from_its_state():
    clock = FakeClock()

    def measure(d):
        clock.t += 10
        return synthetic(d)

    state = HillClimb(ENGINES, 2, 20.0, measure, time_budget_s=35, estimate_s=10, clock=clock).run()
    assert state.stopped.startswith("time budget") and len(state.measurements) == 3
    again = []

    def measure_again(d):
        again.append(d.key)
        return synthetic(d)

    resumed = HillClimb(ENGINES, 2, 20.0, measure_again, time_budget_s=1e9,
                        state=SearchState(dict(state.measurements))).run()
    assert resumed.stopped.startswith("converged")
    assert not set(again) & set(state.measurements)  # nothing measured twice


def test_an_impossible_budget_names_the_closest_deployment():
    state = HillClimb(ENGINES, 2, 0.5, synthetic, time_budget_s=1e9).run()
    best = state.best(0.5)
    assert best.best_within(0.5) is None
    near = best.closest().latency_ms
    assert near == min(m.closest().latency_ms for m in state.measurements.values())
    text = shortfall(best, 0.5)
    assert best.deployment.key in text and f"{near - 0.5:.2f} ms" in text and "over the 0.5 ms budget" in text


def test_no_engines_or_a_bad_budget_is_refused():
    with pytest.raises(InvalidConfigError, match="no gate-passing"):
        HillClimb([], 2, 20, synthetic, time_budget_s=10)
    with pytest.raises(InvalidConfigError, match="positive"):
        HillClimb(ENGINES, 2, 0, synthetic, time_budget_s=10)


def test_each_knob_steps_from_the_best_deployment_so_far():
    calls = []

    def measure(d):
        calls.append(d)
        return synthetic(d)

    HillClimb(ENGINES, 2, 20.0, measure, time_budget_s=1e9).run()
    assert [(d.instances, d.loop_niceness) for d in calls[:3]] == [(1, 15), (2, 15), (2, 0)]
    assert calls[3].backend == "openvino" and (calls[3].instances, calls[3].loop_niceness) == (2, 0)


def test_openvino_streams_are_searched_where_they_can_matter():
    """Streams split an OpenVINO instance's cores further (at most one per thread), so they are values of the
    cores split knob on an OpenVINO engine: the climb finds a gain there even where more workers pay too."""
    def with_streams(d: Deployment) -> Measurement:
        m = synthetic(d)
        gain = 1.5 if d.streams == 2 else 1.0  # two streams pay here
        return dataclasses.replace(m, points=tuple(dataclasses.replace(p, throughput_rps=p.throughput_rps * gain)
                                                   for p in m.points))

    ov = Deployment("openvino", "fp32", 1, 2, 8, 2.0)
    assert normalised(dataclasses.replace(ov, streams=4)).streams is None  # 4 streams on 2 threads: one
    assert normalised(Deployment("onnxruntime", "fp32", 1, 2, 8, 2.0, streams=2)).streams is None  # not OpenVINO's
    calls = []

    def measure(d):
        calls.append(d)
        return with_streams(d)

    climb = HillClimb(ENGINES, 2, 20.0, measure, time_budget_s=1e9, start=dataclasses.replace(ov, instances=1))
    best = climb.run().best(20.0).deployment
    assert best.backend == "openvino" and best.streams == 2 and best.instances == 1
    assert {d.streams for d in calls if d.backend == "onnxruntime"} == {None}
    # ONNX Runtime: 2 splits x 2 niceness x 21 batch/window; OpenVINO: (1x2 with 1 or 2 streams, 2x1) x 2 x 21
    assert climb.space_size() == 84 + 126
    assert "(OpenVINO: x streams)" in climb.describe_space()


def test_the_triton_knobs_leave_out_the_event_loop():
    calls = []

    def measure(d):
        calls.append(d)
        return synthetic(d)

    climb = HillClimb(ENGINES[:1], 2, 20.0, measure, time_budget_s=1e9, knobs=TRITON_KNOBS)
    climb.run()
    assert {d.loop_niceness for d in calls} == {15} and {d.streams for d in calls} == {None}
    assert climb.space_size() == 2 * 21
    assert climb.describe_space() == ("1 engine(s) x 2 worker split(s) of 2 cores x max batch x window = 42 "
                                      "deployments")
    with pytest.raises(InvalidConfigError, match="unknown knob"):
        HillClimb(ENGINES, 2, 20.0, measure, time_budget_s=1, knobs=("instances", "colour"))
