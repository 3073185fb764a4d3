"""hpi/harness.py: percentiles, budgets, and measurements in a separate process."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from hpi import harness
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


class Spinner:
    """A child process that keeps one core busy from when it says "spinning" until it is told to stop, then says
    "idle" and waits without using the CPU (as an OpenMP pool spins after a call, then sleeps). Every step is
    signalled through its pipes, so the tests wait on events, not on guessed durations."""

    CODE = (
        "import select, sys\n"
        "print('spinning', flush=True)\n"
        "while not select.select([sys.stdin], [], [], 0)[0]:\n"
        "    sum(range(2000))\n"
        "sys.stdin.readline()\n"
        "print('idle', flush=True)\n"
        "sys.stdin.readline()\n"
    )

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self._expect("spinning")

    def _expect(self, word: str) -> None:
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline().strip() if ready else "(nothing within 60 s)"
        assert line == word, f"the spinner said {line!r}, expected {word!r}"

    def stop_spinning(self) -> None:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        self._expect("idle")

    def close(self) -> None:
        self.proc.stdin.close()  # the child's last readline returns: it exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def _until(condition, what: str, timeout_s: float = 60.0) -> None:
    """Wait until ``condition()`` holds (polled), failing the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


class FakeTime:
    """A clock that moves only when the harness sleeps or the test says so: for the harness's time logic."""

    def __init__(self) -> None:
        self.now_ns = 0
        self.sleeps: list[float] = []

    def perf_counter_ns(self) -> int:
        return self.now_ns

    def perf_counter(self) -> float:
        return self.now_ns / 1e9

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_ns += round(seconds * 1e9)


@pytest.fixture
def fake_time(monkeypatch) -> FakeTime:
    clock = FakeTime()
    monkeypatch.setattr(harness, "time", clock)
    return clock


def test_budget_bounds_the_run_but_keeps_a_minimum(fake_time):
    def two_ms() -> None:
        fake_time.now_ns += 2_000_000

    t = time_callable(two_ms, warmup=0, budget_s=0.05, min_iterations=5)
    assert t.iterations == 26  # the first call that ends past the 50 ms budget is the last
    assert t.p50_ms == t.min_ms == t.max_ms == 2.0
    t = time_callable(two_ms, warmup=0, budget_s=0.05, min_iterations=40)
    assert t.iterations == 40  # the minimum outlasts the budget
    t = time_callable(two_ms, warmup=0, budget_s=10.0, min_iterations=5, max_iterations=30)
    assert t.iterations == 30  # and the maximum cuts a long budget short


def _cpu_of(clock: FakeTime, busy_until_s: dict[int, float], cores: float = 1.0):
    """process_cpu_s of processes that each use ``cores`` until their time, then none."""
    return lambda pid: cores * min(clock.perf_counter(), busy_until_s[pid])


def test_wait_until_quiet_waits_until_the_spinning_ends_and_no_longer(fake_time, monkeypatch):
    monkeypatch.setattr(harness, "process_cpu_s", _cpu_of(fake_time, {1: 0.4, 2: 0.2}))
    waited = wait_until_quiet([1, 2], window_s=0.05, timeout_s=3.0)
    assert waited == pytest.approx(0.45) and len(fake_time.sleeps) == 9  # 8 busy windows, then one quiet one
    fake_time.sleeps.clear()
    assert wait_until_quiet([1, 2], window_s=0.05, timeout_s=3.0) == pytest.approx(0.05)  # idle: one window
    assert fake_time.sleeps == [0.05]


def test_wait_until_quiet_gives_up_at_its_timeout(fake_time, monkeypatch):
    monkeypatch.setattr(harness, "process_cpu_s", _cpu_of(fake_time, {1: 1e9}))
    assert wait_until_quiet([1], window_s=0.05, timeout_s=0.3) == pytest.approx(0.3)
    assert len(fake_time.sleeps) == 6


def test_wait_until_quiet_counts_cores_against_its_threshold(fake_time, monkeypatch):
    monkeypatch.setattr(harness, "process_cpu_s", _cpu_of(fake_time, {1: 1e9}, cores=0.05))
    assert wait_until_quiet([1], max_cores=0.1, timeout_s=3.0) == pytest.approx(0.05)  # 0.05 cores: quiet
    monkeypatch.setattr(harness, "process_cpu_s", _cpu_of(fake_time, {1: 1e9}, cores=0.2))
    assert wait_until_quiet([1], max_cores=0.1, timeout_s=1.0) == pytest.approx(1.0)  # 0.2 cores: busy
    assert wait_until_quiet([], timeout_s=1.0) == pytest.approx(0.05)  # nothing to watch: one window


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="CPU accounting reads /proc (Linux)")
def test_wait_until_quiet_waits_for_a_real_spinning_process():
    spinner = Spinner()
    try:
        done = threading.Event()
        waited: list[float] = []

        def wait() -> None:
            # A strict threshold (2% of a core over 0.1 s windows): a spinner starved by a loaded machine for
            # one window still counts as busy; the idle one uses nothing.
            waited.append(wait_until_quiet([spinner.pid], window_s=0.1, max_cores=0.02, timeout_s=120.0))
            done.set()

        cpu0 = process_cpu_s(spinner.pid)
        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        _until(lambda: process_cpu_s(spinner.pid) - cpu0 >= 0.3, "the spinner to use 0.3 s of CPU")
        assert not done.is_set()  # it spun all along: still waiting
        spinner.stop_spinning()
        assert done.wait(60), "wait_until_quiet did not return after the spinner went idle"
        assert waited[0] < 120.0  # returned because the process went quiet, not at the timeout
        waiter.join()
    finally:
        spinner.close()


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="CPU accounting reads /proc (Linux)")
def test_cpu_watch_counts_other_processes_only():
    spinner = Spinner()
    try:
        spun = process_cpu_s(spinner.pid)
        t0 = time.perf_counter()
        with CpuWatch([]) as others, CpuWatch([spinner.pid]) as watched:  # the same interval, seen twice
            _until(lambda: process_cpu_s(spinner.pid) - spun >= 0.4, "the spinner to use 0.4 s of CPU")
        spinner_cores = (process_cpu_s(spinner.pid) - spun) / (time.perf_counter() - t0)
    finally:
        spinner.close()
    assert spinner_cores > 0.2  # it ran, even on a loaded machine
    assert others.other_cores is not None and watched.other_cores is not None
    assert others.other_cores >= spinner_cores - 0.1  # a noisy neighbour, seen
    assert others.other_cores - watched.other_cores == pytest.approx(spinner_cores, abs=0.1)  # watched: not counted
