"""hpi/harness.py: percentiles, budgets, and measurements in a separate process."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hpi.errors import HpiError, HpiInternalError
from hpi.harness import Timing, run_isolated, time_callable


def test_percentiles_from_known_samples():
    samples_ns = [i * 1_000_000 for i in range(1, 101)]  # 1..100 ms
    t = Timing.from_samples(samples_ns, items_per_call=4)
    assert t.min_ms == 1 and t.max_ms == 100 and t.iterations == 100
    assert t.p50_ms == pytest.approx(50.5) and t.p90_ms == pytest.approx(90.1) and t.p99_ms == pytest.approx(99.01)
    assert t.throughput == pytest.approx(4 * 1000 / 50.5)


def test_fixed_iterations_and_warmup():
    calls = []
    t = time_callable(lambda: calls.append(1), warmup=3, iterations=7)
    assert len(calls) == 10 and t.iterations == 7


def test_budget_bounds_the_run_but_keeps_a_minimum():
    t0 = time.perf_counter()
    t = time_callable(lambda: time.sleep(0.002), warmup=0, budget_s=0.05, min_iterations=5)
    assert t.iterations >= 5 and time.perf_counter() - t0 < 2.0
    assert t.p50_ms >= 2.0


def test_synchronize_runs_inside_each_timed_call():
    synced = []
    time_callable(lambda: None, warmup=2, iterations=4, synchronize=lambda: synced.append(1))
    assert len(synced) == 6


def echo(request):
    """Used by test_run_isolated (imported by name in the child process)."""
    return {"doubled": [2 * v for v in request["values"]], "pid_differs": True}


def fail(request):
    from hpi.errors import InvalidInputError

    raise InvalidInputError(f"bad item {request['item']}")


def test_run_isolated_round_trip_and_errors():
    assert run_isolated("tests.test_harness:echo", {"values": [1, 2]})["doubled"] == [2, 4]
    with pytest.raises(HpiError, match="InvalidInputError: bad item 7"):
        run_isolated("tests.test_harness:fail", {"item": 7})
    with pytest.raises(HpiError, match=r"failed \(exit 3\)"):
        run_isolated("tests.test_harness:die", {})  # a crash, as of a native library: the candidate failed


def die(request):
    import os

    os._exit(3)


def test_a_bug_in_the_child_is_an_internal_error_with_its_traceback():
    with pytest.raises(HpiInternalError, match="(?s)Traceback.*AttributeError.*no_such_function"):
        run_isolated("tests.test_harness:no_such_function", {})


def test_numpy_samples_accepted():
    assert Timing.from_samples(np.array([1e6, 3e6])).p50_ms == pytest.approx(2.0)
