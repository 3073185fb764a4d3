"""The timing harness: warm-up, then a fixed count or a time budget, percentiles; nothing else.

Measurement never lives in the predictor's hot path. Configurations that disturb each other (Paddle predictors
with different thread counts in one process slowed PP-LCNet from 3.2 ms to 5.1 ms here) are timed in separate
processes: :func:`run_isolated` runs a named measurement function in a fresh interpreter and returns its JSON.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hpi.errors import HpiError, HpiInternalError


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
    env = dict(os.environ)
    env.setdefault("GLOG_minloglevel", "2")  # glog reads this exact (lower-case) name
    proc = subprocess.run(
        [sys.executable, "-m", "hpi.harness", function],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )
    answer = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith('{"hpi_result"'):
            answer = json.loads(line)
            break
    if answer is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise HpiError(f"isolated measurement {function} failed (exit {proc.returncode}):\n{tail}")
    if answer.get("internal_error"):
        raise HpiInternalError(f"isolated measurement {function} hit a bug in the child process:\n"
                               f"{answer['internal_error']}")
    if answer.get("error"):
        raise HpiError(answer["error"])
    return answer["hpi_result"]


def _child_main(function: str) -> int:
    # Keep stdout clean for the answer: everything else (C++ logs included) goes to stderr.
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    request = json.loads(sys.stdin.read())
    module_name, _, attr = function.partition(":")
    try:
        result = {"hpi_result": getattr(importlib.import_module(module_name), attr)(request)}
    except HpiError as exc:
        result = {"hpi_result": None, "error": f"{type(exc).__name__}: {exc}"}
    except Exception:  # a bug, not a candidate's failure: the parent raises it with this traceback
        result = {"hpi_result": None, "internal_error": traceback.format_exc()}
    sys.stdout.flush()
    with os.fdopen(answer_fd, "w") as out:
        out.write(json.dumps(result, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
