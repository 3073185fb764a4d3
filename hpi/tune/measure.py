"""Measuring one deployment for real: ``hpi serve`` started as a subprocess on a free loopback port with the
deployment's options, loaded by :mod:`hpi.tune.load` at ascending client concurrency, stopped again.

Every load level runs ``seconds`` measured after a warm-up; the levels stop at the first one whose chosen
percentile is over the budget (more clients only queue longer) or whose throughput no longer grows (the server is
saturated). The server's log goes to a file beside the record.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpi.errors import HpiError
from hpi.tune.load import Budget, Check, build_request, check_body, http_get, http_head, percentile, run_load
from hpi.tune.record import write_json
from hpi.tune.search import Deployment, Measurement, Point

DEFAULT_IMAGE = Path(__file__).resolve().parent.parent / "data" / "images" / "chelsea.jpg"
SATURATION_GAIN = 1.03  # a load level less than 3% faster than the one before means the server is saturated
MAX_REQUESTS_PER_LEVEL = 200_000


class ServerStartError(HpiError):
    """The server for a deployment did not become healthy."""


@dataclass(frozen=True)
class LoadPlan:
    """How each deployment is loaded."""

    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)  # client connections, ascending
    seconds: float = 2.0  # measured per load level
    warmup_s: float = 1.5  # unmeasured at the highest level first (engine shapes, thread pools); a third before each
    percentile: float = 99.0
    budget_ms: float = 20.0
    image: Path = DEFAULT_IMAGE
    start_timeout_s: float = 180.0
    stop_early: bool = True  # stop at a level over the budget or saturated (see the module's docstring)
    last_level_seconds: float | None = None  # the last level measures this long instead (a confirmation)
    step_down: bool = False  # a confirmation: while the long level misses the budget, the next lower one, as long

    def estimate_s(self, start_s: float = 8.0) -> float:
        """A measurement's expected length: a server start and every load level."""
        return start_s + self.warmup_s + len(self.concurrency) * (self.seconds + self.warmup_s / 3)


def free_port() -> int:
    """A free loopback port (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_arguments(pipeline: str | Path, tuned: str | Path, *, host: str = "127.0.0.1", port: int = 8080
                    ) -> list[str]:
    """The ``hpi serve`` options (after ``hpi serve``) that run the deployment of the tune record ``tuned``: the
    measured servers and the printed command are started alike."""
    return ["--pipeline", str(pipeline), "--tuned", str(tuned), "--host", host, "--port", str(port),
            "--log-level", "warning"]


def explicit_arguments(pipeline: str | Path, record: dict[str, Any], *, host: str = "127.0.0.1", port: int = 8080
                       ) -> list[str] | None:
    """The same server as :func:`serve_arguments` with every value spelled out as ``hpi serve`` flags (what
    ``--tuned`` sets); None for a precision other than fp32, which only ``--tuned`` (or a pipeline's hpi_config)
    can ask for."""
    if record["precision"] != "fp32":
        return None
    d = record["deployment"]
    spread = (["--engine", "ray", "--replicas", str(d["instances"]), "--cpus-per-replica", str(d["threads"])]
              if record["target"] == "ray" else ["--workers", str(d["instances"])])
    return ["--pipeline", str(pipeline), "--host", host, "--port", str(port), "--use-hpip", "--backend",
            record["backend"], "--threads", str(d["threads"]), *spread,
            "--max-batch", str(d["max_batch_size"]), "--batch-window-ms", f"{d['batch_delay_ms']:g}",
            *(["--streams", str(d["streams"])] if d.get("streams") else []),
            "--no-visualize", "--loop-niceness", str(record.get("loop_niceness", 15)), "--log-level", "warning"]


def deployment_record(model: str, d: Deployment, target: str = "serve") -> dict[str, Any]:
    """The smallest tune record that runs ``d`` (what a measured server is started with)."""
    return {"kind": "hpi-tune", "version": 1, "target": target, "model": model, "backend": d.backend,
            "precision": d.precision, "deployment": d.deployment_dict(), "visualize": False,
            "loop_niceness": d.loop_niceness}


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    """The server's ``GET /health`` result once it answers 200.

    Raises:
        ServerStartError: it exited first, or did not answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"the server exited with code {proc.returncode} before it was healthy")
        try:
            status, body = http_get(port, "/health", timeout_s=5)
            if status == 200:
                return json.loads(body)["result"]
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.2)
    raise ServerStartError(f"the server was not healthy after {timeout_s:.0f} s")


def wait_workers(port: int, workers: int, timeout_s: float) -> None:
    """Wait until ``GET /metrics`` shows all ``workers`` of ``hpi serve --workers`` (each writes its batcher
    counters, labelled with its index, once it serves). ``/health`` answers as soon as one is ready, and a
    keep-alive connection stays with the worker it was handed to: a load that started then would load one worker
    with every connection for its whole run.

    Raises:
        ServerStartError: not every worker showed up within ``timeout_s``.
    """
    if workers <= 1:
        return
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            text = http_get(port, "/metrics", timeout_s=5)[1].decode("utf-8", "replace")
        except OSError:
            text = ""
        seen = set(re.findall(r'worker="(\d+)"', text))
        if len(seen) >= workers:
            return
        time.sleep(0.25)
    raise ServerStartError(f"{len(seen)} of {workers} workers were serving after {timeout_s:.0f} s")


def wait_replicas(port: int, replicas: int, timeout_s: float) -> None:
    """Wait until ``GET /health`` has been answered by all ``replicas`` of ``hpi serve --engine ray`` (each names
    itself in ``X-Hpi-Replica``; Ray's proxy spreads requests over the replicas that are running).

    Raises:
        ServerStartError: not every replica answered within ``timeout_s``.
    """
    from hpi.scaleout.ray_serve import REPLICA_HEADER

    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            status, headers = http_head(port, "/health", timeout_s=5)
        except OSError:
            status, headers = 0, {}
        if status == 200 and headers.get(REPLICA_HEADER.lower()):
            seen.add(headers[REPLICA_HEADER.lower()])
            if len(seen) >= replicas:
                return
        else:
            time.sleep(0.25)
    raise ServerStartError(f"{len(seen)} of {replicas} Ray Serve replicas answered after {timeout_s:.0f} s")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM (the server drains), then SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass(frozen=True)
class Traffic:
    """What every client sends (the bytes of one request) and how each answer is judged."""

    request: bytes
    check: Check = check_body


def serve_traffic(port: int, image: Path) -> Traffic:
    """``POST /image-classification`` with ``image`` to ``hpi serve`` on ``port``."""
    body = json.dumps({"image": base64.b64encode(image.read_bytes()).decode("ascii")}).encode()
    return Traffic(build_request(port, body))


def load_levels(port: int, plan: LoadPlan, traffic: Traffic | None = None,
                concurrency: Sequence[int] | None = None) -> list[Point]:
    """Load the running server at each concurrency, ascending, stopping early (see the module's docstring); the
    traffic is ``hpi serve``'s unless given."""
    traffic = traffic or serve_traffic(port, plan.image)
    request, check = traffic.request, traffic.check
    levels = list(concurrency or plan.concurrency)
    # Warm-up at the highest level first: every batch size up to the max reaches the engine, so that engines that
    # compile per shape (OpenVINO's static batches, oneDNN's primitives) have done so before any level is timed.
    asyncio.run(run_load(port, request, max(levels), plan.warmup_s, 0.0, Budget(MAX_REQUESTS_PER_LEVEL), check))

    def measure(clients: int, seconds: float) -> Point:
        stats, measured_s = asyncio.run(run_load(port, request, clients, plan.warmup_s / 3, seconds,
                                                 Budget(MAX_REQUESTS_PER_LEVEL), check))
        return Point(concurrency=clients, throughput_rps=round(len(stats.latencies_ms) / measured_s, 2),
                     latency_ms=percentile(stats.latencies_ms, plan.percentile),
                     p50_ms=percentile(stats.latencies_ms, 50), requests=stats.sent,
                     errors=sum(stats.errors.values()), seconds=round(measured_s, 3))

    points: list[Point] = []
    for i, clients in enumerate(levels):
        last = i == len(levels) - 1 and plan.last_level_seconds is not None
        point = measure(clients, plan.last_level_seconds if last else plan.seconds)
        points.append(point)
        if not plan.stop_early:
            continue
        if not point.within(plan.budget_ms):
            break
        best_before = max((p.throughput_rps for p in points[:-1]), default=0.0)
        if best_before and point.throughput_rps < best_before * SATURATION_GAIN:
            break
    if plan.step_down and plan.last_level_seconds is not None:
        # a confirmation whose long level missed: the same server, one level lower at a time, each as long, until
        # one holds (the last point is the confirmation's answer)
        for clients in reversed(levels[:-1]):
            if points[-1].within(plan.budget_ms):
                break
            points.append(measure(clients, plan.last_level_seconds))
    return points


class ServeMeasurer:
    """Measures deployments through the real ``hpi serve``, each in a fresh server process.

    Args:
        model: the model's name (for the records the servers are started with).
        pipeline: the pipeline YAML the server runs.
        plan: the load levels.
        workdir: where each server's record and the servers' log (``servers.log``) go.
        env: extra environment for the server (``HPI_CACHE_DIR`` and the like are inherited anyway).
        through: what the record says the load went through (``hpi serve``, or ``hpi serve`` standing in).
    """

    def __init__(self, model: str, pipeline: Path, plan: LoadPlan, workdir: Path,
                 env: dict[str, str] | None = None, through: str = "hpi serve", target: str = "serve") -> None:
        self.model, self.pipeline, self.plan, self.env = model, pipeline, plan, env or {}
        self.workdir = workdir
        self.log = workdir / "servers.log"
        self.through = through  # what the measurements went through (the record's measured_through)
        self.target = target  # "ray": hpi serve --engine ray (the record's instances are Ray Serve replicas)

    def with_plan(self, plan: LoadPlan) -> ServeMeasurer:
        """The same servers loaded by another plan (a confirmation's)."""
        return ServeMeasurer(self.model, self.pipeline, plan, self.workdir, self.env, self.through, self.target)

    def command(self, d: Deployment, port: int) -> list[str]:
        """The server of ``d``: ``hpi serve --tuned`` with a record of ``d`` alone."""
        tuned = self.workdir / "deployment.json"
        write_json(tuned, deployment_record(self.model, d, self.target))
        return [sys.executable, "-m", "hpi", "serve", *serve_arguments(self.pipeline, tuned, port=port)]

    def __call__(self, d: Deployment) -> Measurement:
        start = time.monotonic()
        port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            log.write(f"\n==== {d.key} on port {port}\n".encode())
            log.flush()
            command = self.command(d, port)
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **self.env}, start_new_session=True)
            try:
                health = wait_healthy(port, proc, self.plan.start_timeout_s)
                served = health["models"][0]
                if served.get("backend") != d.backend:
                    return Measurement(d, (), time.monotonic() - start,
                                       f"the server ran {served.get('backend')}, not {d.backend}")
                if self.target == "ray":
                    wait_replicas(port, d.instances, self.plan.start_timeout_s)
                else:
                    wait_workers(port, d.instances, self.plan.start_timeout_s)
                points = load_levels(port, self.plan)
            except ServerStartError as exc:
                return Measurement(d, (), time.monotonic() - start, f"{exc} (log: {self.log})")
            finally:
                stop(proc)
        return Measurement(d, tuple(points), time.monotonic() - start)
