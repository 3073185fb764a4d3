"""The timing harness: warm-up, then a fixed count or a time budget, percentiles; nothing else.

Measurement never lives in the predictor's hot path. Configurations that disturb each other (Paddle predictors
with different thread counts in one process slowed PP-LCNet from 3.2 ms to 5.1 ms here) are timed in separate
processes: :func:`run_isolated` runs a named measurement function in a fresh interpreter and returns its JSON.

Timing on a shared machine: :func:`wait_until_quiet` waits until other measuring processes have stopped using the
CPU (a Paddle worker's OpenMP threads spin on about one core for 0.2 s after its last call, ONNX Runtime's for
under 0.1 s, measured here), and :class:`CpuWatch` says how much CPU other processes used while a timing ran.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hpi.errors import HpiError, HpiInternalError

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Timing:
    """Latency percentiles of one repeated operation, in milliseconds, and its throughput."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    iterations: int
    items_per_call: int  # batch size: throughput counts items, not calls
    throughput: float  # items per second at the median latency

    @classmethod
    def from_samples(cls, samples_ns: list[int] | np.ndarray, items_per_call: int = 1) -> Timing:
        if len(samples_ns) == 0:
            raise HpiInternalError("no timing samples")
        ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
        p50 = float(np.percentile(ms, 50))
        return cls(
            p50_ms=p50,
            p90_ms=float(np.percentile(ms, 90)),
            p99_ms=float(np.percentile(ms, 99)),
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            mean_ms=float(ms.mean()),
            iterations=len(ms),
            items_per_call=items_per_call,
            throughput=items_per_call * 1000.0 / p50 if p50 > 0 else float("inf"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_callable(
    fn: Callable[[], Any],
    *,
    warmup: int = 10,
    iterations: int | None = None,
    budget_s: float = 3.0,
    min_iterations: int = 20,
    max_iterations: int = 10_000,
    items_per_call: int = 1,
    synchronize: Callable[[], None] | None = None,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``iterations`` calls, or as many as fit in ``budget_s``
    (at least ``min_iterations``). ``synchronize`` runs inside each timed call (device sync on GPU)."""
    for _ in range(warmup):
        fn()
        if synchronize:
            synchronize()
    samples: list[int] = []
    deadline = time.perf_counter_ns() + int(budget_s * 1e9)
    target = iterations if iterations is not None else max_iterations
    while len(samples) < target:
        t0 = time.perf_counter_ns()
        fn()
        if synchronize:
            synchronize()
        samples.append(time.perf_counter_ns() - t0)
        if iterations is None and len(samples) >= min_iterations and time.perf_counter_ns() > deadline:
            break
    return Timing.from_samples(samples, items_per_call)


def run_isolated(function: str, request: dict[str, Any], *, timeout_s: float = 1800.0) -> dict[str, Any]:
    """Run ``function`` ("module:name", taking and returning a JSON-able dict) in a fresh Python process.

    The child's stdout carries only the JSON answer (its libraries' chatter is sent to stderr).

    Raises:
        HpiError: the child raised an ``HpiError`` (same message), or died without answering (a crash in a native
            library: the exit status and the end of its stderr).
        HpiInternalError: the child raised any other exception, a bug; the message holds its traceback.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "hpi.harness", function],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=_child_env(),
    )
    answer = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith('{"hpi_result"'):
            answer = json.loads(line)
            break
    return _result(function, answer, proc.returncode, proc.stderr)


def call_in_process(function: str, request: dict[str, Any]) -> dict[str, Any]:
    """Call ``function`` ("module:name") in this process, imported by name as :func:`run_isolated`'s child does,
    with the same answers and errors: for tests and debugging of what normally runs isolated."""
    return _result(function, json.loads(json.dumps(_call(function, request), default=float)), 0, "")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` has used; 0.0 when it has ended or cannot be read
    (not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_s() -> float | None:
    """CPU seconds every process on the machine has used since boot (all of /proc/stat but idle and iowait), or
    None where that cannot be read."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(values[:8]) - values[3] - values[4]) / _CLOCK_TICKS


def wait_until_quiet(pids: list[int], *, window_s: float = 0.05, max_cores: float = 0.1, timeout_s: float = 1.0
                     ) -> float:
    """Wait until the processes ``pids`` together use under ``max_cores`` over a ``window_s`` window (their
    threads have stopped spinning), or ``timeout_s`` has passed; returns the seconds waited. With nothing to watch
    (no pids, or no /proc) it waits one window."""
    t0 = time.perf_counter()
    while True:
        before = sum(process_cpu_s(p) for p in pids)
        time.sleep(window_s)
        used = sum(process_cpu_s(p) for p in pids) - before
        waited = time.perf_counter() - t0
        if used < max_cores * window_s or waited >= timeout_s:
            return waited


class CpuWatch:
    """How many cores processes other than the watched ones used while a block ran (a noisy neighbour)::

        with CpuWatch([worker.pid]) as watch:
            worker.call(request)
        watch.other_cores  # e.g. 0.02; None where /proc/stat cannot be read
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = [*pids, os.getpid()]
        self.other_cores: float | None = None

    def __enter__(self) -> CpuWatch:
        self._t0, self._busy0 = time.perf_counter(), machine_busy_s()
        self._own0 = sum(process_cpu_s(p) for p in self.pids)
        return self

    def __exit__(self, *exc: object) -> None:
        busy1, wall = machine_busy_s(), time.perf_counter() - self._t0
        own = sum(process_cpu_s(p) for p in self.pids) - self._own0
        if busy1 is not None and self._busy0 is not None and wall > 0:
            self.other_cores = max(0.0, (busy1 - self._busy0 - own) / wall)


class IsolatedWorker:
    """A fresh Python process that answers calls of one function, one request at a time, until closed: what
    :func:`run_isolated` does, without a new interpreter (and a new import of every library) per call. A
    measurement that runs in rounds keeps its loaded engine in the worker between them.

    Example:
        >>> with IsolatedWorker("tests.test_harness:echo") as worker:  # doctest: +SKIP
        ...     worker.call({"values": [1]})
    """

    def __init__(self, function: str) -> None:
        self.function = function
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 - lives with the worker
        self._proc = subprocess.Popen([sys.executable, "-m", "hpi.harness", "--serve", function],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                      env=_child_env())

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self._proc.pid

    def call(self, request: dict[str, Any], *, timeout_s: float = 1800.0) -> dict[str, Any]:
        """One call in the worker; raises as :func:`run_isolated` does (a dead worker answers every later call
        with the same error)."""
        answer = None
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
                self._proc.stdin.flush()  # type: ignore[union-attr]
                ready, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
                line = self._proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
                answer = json.loads(line) if line.startswith('{"hpi_result"') else None
            except BrokenPipeError:
                answer = None
            if answer is None and self._proc.poll() is None:
                self._proc.kill()
        self._stderr.seek(0)
        return _result(self.function, answer, self._proc.wait() if answer is None else 0, self._stderr.read())

    def close(self) -> None:
        """End the worker (its engines are freed with it). Safe to call twice."""
        if self._proc.poll() is None:
            self._proc.stdin.close()  # type: ignore[union-attr]
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()

    def __enter__(self) -> IsolatedWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GLOG_minloglevel", "2")  # glog reads this exact (lower-case) name
    return env


def _result(function: str, answer: dict[str, Any] | None, returncode: int, stderr: str) -> dict[str, Any]:
    """The child's answer, or the error it stands for."""
    if answer is None:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise HpiError(f"isolated measurement {function} failed (exit {returncode}):\n{tail}")
    if answer.get("internal_error"):
        raise HpiInternalError(f"isolated measurement {function} hit a bug in the child process:\n"
                               f"{answer['internal_error']}")
    if answer.get("error"):
        raise HpiError(answer["error"])
    return answer["hpi_result"]


def _call(function: str, request: dict[str, Any]) -> dict[str, Any]:
    module_name, _, attr = function.partition(":")
    try:
        return {"hpi_result": getattr(importlib.import_module(module_name), attr)(request)}
    except HpiError as exc:
        return {"hpi_result": None, "error": f"{type(exc).__name__}: {exc}"}
    except Exception:  # a bug, not a candidate's failure: the parent raises it with this traceback
        return {"hpi_result": None, "internal_error": traceback.format_exc()}


def _child_main(function: str, serve: bool = False) -> int:
    # Keep stdout clean for the answers: everything else (C++ logs included) goes to stderr.
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    with os.fdopen(answer_fd, "w") as out:
        requests = (json.loads(line) for line in sys.stdin) if serve else [json.loads(sys.stdin.read())]
        for request in requests:
            result = _call(function, request)
            sys.stdout.flush()
            out.write(json.dumps(result, default=float) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[-1], serve=sys.argv[1] == "--serve"))
