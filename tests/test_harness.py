"""hpi/harness.py: percentiles, budgets, and measurements in a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from hpi.errors import HpiError, HpiInternalError
from hpi.harness import (
    CpuWatch,
    IsolatedWorker,
    Timing,
    process_cpu_s,
    run_isolated,
    time_callable,
    wait_until_quiet,
)


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


_CALLS = []


def count(request):
    """Used by the worker test: state kept between calls of one worker process."""
    _CALLS.append(request["n"])
    return {"seen": list(_CALLS), "pid": os.getpid()}


def test_a_worker_answers_many_calls_in_one_process_and_reports_errors_like_run_isolated():
    with IsolatedWorker("tests.test_harness:count") as worker:
        first, second = worker.call({"n": 1}), worker.call({"n": 2})
        assert second["seen"] == [1, 2] and first["pid"] == second["pid"] != os.getpid()
        with pytest.raises(HpiInternalError, match="KeyError"):
            worker.call({})  # a bug in the function: the worker lives on
        assert worker.call({"n": 3})["seen"] == [1, 2, 3]
    with IsolatedWorker("tests.test_harness:fail") as worker, pytest.raises(HpiError, match="bad item 7"):
        worker.call({"item": 7})
    with IsolatedWorker("tests.test_harness:die") as worker:
        with pytest.raises(HpiError, match=r"failed \(exit 3\)"):
            worker.call({})
        with pytest.raises(HpiError, match=r"failed \(exit 3\)"):
            worker.call({})  # dead: every later call says so


def _spinner(seconds: float) -> subprocess.Popen[bytes]:
    """A process that keeps one core busy for ``seconds``, then sleeps (as an OpenMP pool spins after a call)."""
    code = f"import time\nt=time.perf_counter()\nwhile time.perf_counter()-t<{seconds}: pass\ntime.sleep(30)"
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="CPU accounting reads /proc (Linux)")
def test_wait_until_quiet_waits_for_spinning_threads_and_no_longer():
    spinner = _spinner(0.4)
    try:
        time.sleep(0.1)  # the interpreter has started and spins
        waited = wait_until_quiet([spinner.pid], timeout_s=3.0)
        assert 0.15 <= waited < 2.0  # until its spin ended, not the timeout
        assert wait_until_quiet([spinner.pid], timeout_s=3.0) < 0.15  # idle now: one window
        assert wait_until_quiet([spinner.pid], window_s=0.05, timeout_s=0.1) < 0.5
    finally:
        spinner.kill()
        spinner.wait()


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="CPU accounting reads /proc (Linux)")
def test_cpu_watch_counts_other_processes_only():
    spinner = _spinner(5.0)
    try:
        time.sleep(0.1)
        spun = process_cpu_s(spinner.pid)
        t0 = time.perf_counter()
        with CpuWatch([]) as others, CpuWatch([spinner.pid]) as watched:  # the same half second, seen twice
            time.sleep(0.5)
        spinner_cores = (process_cpu_s(spinner.pid) - spun) / (time.perf_counter() - t0)
    finally:
        spinner.kill()
        spinner.wait()
    assert spinner_cores > 0.2  # it ran, even on a loaded machine
    assert others.other_cores is not None and watched.other_cores is not None
    assert others.other_cores >= spinner_cores - 0.1  # a noisy neighbour, seen
    assert others.other_cores - watched.other_cores == pytest.approx(spinner_cores, abs=0.1)  # watched: not counted
