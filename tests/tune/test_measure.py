"""hpi/tune/measure.py: the load levels a measurement and a confirmation run, on a synthetic load (no server)."""

from __future__ import annotations

import dataclasses

import pytest

from hpi.tune import measure
from hpi.tune.load import LoadStats
from hpi.tune.measure import LoadPlan, load_levels


@pytest.fixture
def synthetic_load(monkeypatch):
    """A server whose p99 at ``clients`` is ``p99[clients]`` in a short level and 1.3x that in a longer one (a short
    level sees less of the tail); records each (clients, seconds) loaded."""
    p99 = {1: 7.0, 2: 10.0, 4: 14.0, 8: 18.0}
    calls = []

    async def run_load(port, request, clients, warmup_s, duration_s, budget, check=None):  # noqa: ANN001, ARG001
        calls.append((clients, duration_s))
        if duration_s == 0:  # the warm-up
            return LoadStats(), 1e-9
        latency = p99[clients] * (1.3 if duration_s > 2 else 1.0)
        return LoadStats(latencies_ms=[latency] * 100 * clients, sent=100 * clients), 1.0  # throughput grows

    monkeypatch.setattr(measure, "run_load", run_load)
    monkeypatch.setattr(measure, "build_request", lambda port, body: b"")  # noqa: ARG005
    return calls


def test_a_search_measures_levels_ascending_and_stops_over_the_budget(synthetic_load):
    plan = LoadPlan(concurrency=(1, 2, 4, 8), seconds=1.5, budget_ms=12.0)
    points = load_levels(0, plan)
    assert [(p.concurrency, p.latency_ms) for p in points] == [(1, 7.0), (2, 10.0), (4, 14.0)]


def test_a_confirmation_steps_down_until_a_level_holds(synthetic_load):
    """Confirming 8 clients (18 ms short, 23.4 ms long) against 20 ms: 8 misses, 4 (18.2 ms long) holds."""
    plan = dataclasses.replace(LoadPlan(concurrency=(1, 2, 4, 8), seconds=1.5, budget_ms=20.0), stop_early=False,
                               last_level_seconds=4.5, step_down=True)
    points = load_levels(0, plan)
    assert [(p.concurrency, p.latency_ms) for p in points] == [(1, 7.0), (2, 10.0), (4, 14.0), (8, 23.4),
                                                                (4, pytest.approx(18.2))]
    assert synthetic_load[1:] == [(1, 1.5), (2, 1.5), (4, 1.5), (8, 4.5), (4, 4.5)]
    assert points[-1].within(20.0)


def test_a_confirmation_that_holds_does_not_step_down(synthetic_load):
    plan = dataclasses.replace(LoadPlan(concurrency=(1, 2, 4), seconds=1.5, budget_ms=20.0), stop_early=False,
                               last_level_seconds=4.5, step_down=True)
    assert [p.concurrency for p in load_levels(0, plan)] == [1, 2, 4]
