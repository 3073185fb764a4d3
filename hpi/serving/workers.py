"""``hpi serve --workers N``: N server processes sharing one listening socket, each with its own engine.

One process's event loop, engine threads and the interpreter's lock share the CPU; on a small machine the engine's
OpenMP threads then wait for each other whenever the loop takes one of their cores (load_test.md: the same engine
work cost 10-20% more CPU in the server than offline). N processes with ``cores / N`` engine threads each keep their
work apart: the kernel hands each accepted connection to one of them.

How it runs:

1. The supervisor (this process) builds the pipeline once, so that measured selection, export and engine builds
   happen once, into the caches every worker then reads, and closes it again.
2. It binds the socket, then starts the workers with ``spawn`` (a fresh interpreter each: no forked OpenMP or
   library state). Each builds its app with :func:`hpi.serving.app.create_app` and runs uvicorn on the shared socket.
3. Metrics: every worker records its request counters in `prometheus_client`'s multiprocess files in one directory
   and writes its batchers' counters there once a second; ``GET /metrics`` on any worker adds them all up (request
   metrics summed; batcher metrics with a ``worker`` label).
4. On SIGTERM or SIGINT it asks every worker to stop (each finishes its accepted requests, as a single server does),
   waits, and removes the metrics directory. A worker that dies is started again; one that dies within
   :data:`CRASH_WINDOW_S` of its start stops the server, since it would only die again.

PP-ShiTuV2 is served by one process: the indexes its requests build live in that process.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.connection import wait
from typing import Any

from hpi.errors import InvalidConfigError
from hpi.serving.common import ServeSettings

logger = logging.getLogger(__name__)

CRASH_WINDOW_S = 10.0  # a worker exiting sooner than this after its start stops the server instead of restarting
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # where prometheus_client's multiprocess mode keeps its files


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """What every worker process needs besides the settings: its uvicorn options and logging."""

    log_level: str = "info"
    max_connections: int = 512  # for the whole server; each worker takes its share
    graceful_timeout_s: float = 30.0
    metrics_dir: str | None = None


def worker_settings(settings: ServeSettings, workers: int, cores: int | None = None) -> ServeSettings:
    """The settings each of ``workers`` processes runs with: the machine's cores shared out as engine threads
    (unless ``hpi_config`` names ``threads``) and as image-decoding threads (unless ``cpu_workers`` is set)."""
    if workers < 1:
        raise InvalidConfigError(f"workers must be at least 1, got {workers!r}")
    cores = cores or os.cpu_count() or 1
    share = max(1, cores // workers)
    hpi_config = dict(settings.hpi_config or {})
    hpi_config.setdefault("threads", share)
    return dataclasses.replace(settings, hpi_config=hpi_config,
                               cpu_workers=settings.cpu_workers or min(4, share + 1))


def prepare(pipeline: str | os.PathLike[str], settings: ServeSettings) -> None:
    """Build the pipeline once in this process, so that the workers find its decisions and engines cached; refuse
    what cannot be served by several processes."""
    from hpi.pipelines import create_pipeline

    built = create_pipeline(pipeline, device=settings.device, use_hpip=settings.use_hpip,
                            hpi_config=settings.hpi_config, cache_dir=settings.cache_dir)
    try:
        if callable(getattr(built, "build_index", None)):
            raise InvalidConfigError(
                "PP-ShiTuV2 is served by one process: the indexes its requests build and change live in that "
                "process's memory, which other workers would not see; use --workers 1")
    finally:
        close = getattr(built, "close", None)
        if callable(close):
            close()


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket every worker accepts on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve_workers(pipeline: str | os.PathLike[str], settings: ServeSettings, *, host: str, port: int, workers: int,
                  options: WorkerOptions | None = None) -> int:
    """Serve ``pipeline`` (a name or YAML) from ``workers`` processes until SIGTERM or SIGINT; 0 on a clean stop."""
    options = options or WorkerOptions()
    settings = worker_settings(settings, workers)
    prepare(pipeline, settings)
    metrics_dir = tempfile.mkdtemp(prefix="hpi-serve-metrics-") if settings.metrics else None
    options = dataclasses.replace(options, metrics_dir=metrics_dir,
                                  max_connections=max(1, options.max_connections // workers))
    sock = bind(host, port)
    supervisor = _Supervisor(str(pipeline), settings, options, sock, workers)
    try:
        return supervisor.run()
    finally:
        sock.close()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


class _Supervisor:
    """Starts the workers, restarts one that dies, and stops them all on a signal."""

    def __init__(self, pipeline: str, settings: ServeSettings, options: WorkerOptions, sock: socket.socket,
                 workers: int) -> None:
        self.pipeline, self.settings, self.options, self.sock = pipeline, settings, options, sock
        self.context = multiprocessing.get_context("spawn")
        self.procs: list[Any] = [None] * workers
        self.started: list[float] = [0.0] * workers
        self.stopping = False

    def start(self, index: int) -> None:
        # Set while the worker's interpreter starts, so prometheus_client is in multiprocess mode from its import on.
        saved = os.environ.get(METRICS_ENV)
        if self.options.metrics_dir:
            os.environ[METRICS_ENV] = self.options.metrics_dir
        try:
            proc = self.context.Process(target=worker_main, name=f"hpi-serve-worker-{index}",
                                        args=(self.pipeline, self.settings, self.options, self.sock, index))
            proc.start()
        finally:
            if saved is None:
                os.environ.pop(METRICS_ENV, None)
            else:
                os.environ[METRICS_ENV] = saved
        self.procs[index], self.started[index] = proc, time.monotonic()
        logger.info("worker %d started (pid %d)", index, proc.pid)

    def run(self) -> int:
        def on_signal(signum: int, _frame: Any) -> None:
            self.stopping = True

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(len(self.procs)):
                self.start(index)
            code = self.watch()
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return code

    def watch(self) -> int:
        while not self.stopping:
            wait([p.sentinel for p in self.procs], timeout=0.5)
            for index, proc in enumerate(self.procs):
                if proc.is_alive() or self.stopping:
                    continue
                self._forget(proc)
                if time.monotonic() - self.started[index] < CRASH_WINDOW_S:
                    logger.error("worker %d exited with code %s within %.0f s of its start; stopping the server",
                                 index, proc.exitcode, CRASH_WINDOW_S)
                    return 1
                logger.warning("worker %d exited with code %s; starting it again", index, proc.exitcode)
                self.start(index)
        return 0

    def stop(self) -> None:
        """SIGTERM every worker (uvicorn's graceful shutdown, then the app drains its queues), wait, then kill."""
        live = [p for p in self.procs if p is not None and p.is_alive()]
        for proc in live:
            proc.terminate()
        deadline = time.monotonic() + self.options.graceful_timeout_s + self.settings.drain_timeout_s + 10.0
        for proc in live:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                logger.error("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.join(5.0)
        for proc in self.procs:
            if proc is not None:
                self._forget(proc)

    def _forget(self, proc: Any) -> None:
        """A dead worker's live gauges (requests in flight) no longer count."""
        if self.options.metrics_dir and proc.pid is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(proc.pid, self.options.metrics_dir)


def worker_main(pipeline: str, settings: ServeSettings, options: WorkerOptions, sock: socket.socket,
                index: int) -> None:
    """One worker process: its own app and engine on the shared socket."""
    os.setpgrp()  # a terminal's Ctrl-C reaches only the supervisor, which stops the workers once
    logging.basicConfig(level=options.log_level.upper(), format=f"%(levelname)s worker {index} %(name)s: %(message)s")
    import uvicorn

    from hpi.serving.app import create_app
    from hpi.serving.observability import configure_access_log

    if settings.access_log:
        configure_access_log(options.log_level)
    app = create_app(pipeline, settings, worker=index, metrics_dir=options.metrics_dir)
    config = uvicorn.Config(app, log_level=options.log_level, limit_concurrency=options.max_connections,
                            timeout_keep_alive=5, access_log=False,
                            timeout_graceful_shutdown=options.graceful_timeout_s)
    uvicorn.Server(config).run(sockets=[sock])
