"""``hpi serve --workers N``: N server processes behind one port, each with its own engine.

One process's event loop, engine threads and the interpreter's lock share the CPU; on a small machine the engine's
OpenMP threads then wait for each other whenever the loop takes one of their cores (load_test.md: the same engine
work cost 10-20% more CPU in the server than offline). N processes with ``cores / N`` engine threads each keep their
work apart.

How it runs:

1. The supervisor (this process) builds the pipeline once, so that measured selection, export and engine builds
   happen once, into the caches every worker then reads, and closes it again.
2. It starts the workers with ``spawn`` (a fresh interpreter each: no forked OpenMP or library state). Each builds
   its app with :func:`hpi.serving.app.create_app`, loads its model, and says it is ready.
3. The supervisor accepts every connection itself and hands it to the next ready worker in turn, over a Unix socket
   (the file descriptor travels, the bytes never pass through the supervisor), as Node.js's cluster module does.
   Workers accepting from one shared socket may split connections unevenly: asyncio accepts everything waiting
   when it wakes, and a keep-alive connection stays where it landed (one load test that way had the engines busy
   62% of the time; with the hand-off every run had them 90-91% busy).
4. Metrics: every worker records its request counters in `prometheus_client`'s multiprocess files in one directory
   and writes its batchers' counters there once a second; ``GET /metrics`` on any worker adds them all up (request
   metrics summed; batcher metrics with a ``worker`` label).
5. On SIGTERM or SIGINT it stops accepting and asks every worker to stop (each finishes its accepted requests, as
   a single server does), waits, and removes the metrics directory. A worker that dies is started again; one that
   dies within :data:`CRASH_WINDOW_S` of its start stops the server, since it would only die again.

PP-ShiTuV2 is served by one process: the indexes its requests build live in that process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from multiprocessing.connection import wait
from typing import Any

from hpi.errors import InvalidConfigError
from hpi.serving.common import ServeSettings
from hpi.serving.server import HpiServer, server_config

logger = logging.getLogger(__name__)

CRASH_WINDOW_S = 10.0  # a worker exiting sooner than this after its start stops the server instead of restarting
SHITU_ONE_PROCESS = ("PP-ShiTuV2 is served by one process: the indexes its requests build and change live in that "
                     "process's memory, which other workers would not see; use --workers 1")
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # where prometheus_client's multiprocess mode keeps its files


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """What every worker process needs besides the settings: its uvicorn options and logging."""

    log_level: str = "info"
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
                               cpu_workers=settings.cpu_workers or min(4, share + 1),
                               max_connections=max(1, settings.max_connections // workers))


def prepare(pipeline: str | os.PathLike[str], settings: ServeSettings) -> ServeSettings:
    """Build the pipeline once in this process, so that the workers find its decisions and engines cached; refuse
    what cannot be served by several processes. Returns ``settings`` with ``max_batch="auto"`` measured here, so
    that every worker runs the same batch size."""
    from hpi.pipelines import create_pipeline
    from hpi.serving.classification import with_measured_max_batch

    if str(pipeline) == "PP-ShiTuV2":
        raise InvalidConfigError(SHITU_ONE_PROCESS)
    built = create_pipeline(pipeline, device=settings.device, use_hpip=settings.use_hpip,
                            hpi_config=settings.hpi_config, cache_dir=settings.cache_dir)
    try:
        if callable(getattr(built, "build_index", None)):
            raise InvalidConfigError(SHITU_ONE_PROCESS)
        return with_measured_max_batch(built, settings)
    finally:
        close = getattr(built, "close", None)
        if callable(close):
            close()


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket the supervisor accepts on (SO_REUSEADDR, as uvicorn binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


def serve_workers(pipeline: str | os.PathLike[str], settings: ServeSettings, *, host: str, port: int, workers: int,
                  options: WorkerOptions | None = None) -> int:
    """Serve ``pipeline`` (a name or YAML) from ``workers`` processes until SIGTERM or SIGINT; 0 on a clean stop."""
    options = options or WorkerOptions()
    settings = prepare(pipeline, worker_settings(settings, workers))
    metrics_dir = tempfile.mkdtemp(prefix="hpi-serve-metrics-") if settings.metrics else None
    options = dataclasses.replace(options, metrics_dir=metrics_dir)
    sock = bind(host, port)
    supervisor = _Supervisor(str(pipeline), settings, options, sock, workers)
    try:
        return supervisor.run()
    finally:
        supervisor.close_listener()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@dataclasses.dataclass
class _Worker:
    """One worker process as the supervisor sees it: the process, its end of the connection channel, its readiness."""

    process: Any
    channel: socket.socket
    ready: Any  # multiprocessing Event, set once the worker serves
    started: float


class _Supervisor:
    """Starts the workers, hands them connections in turn, restarts one that dies, and stops them all on a signal."""

    def __init__(self, pipeline: str, settings: ServeSettings, options: WorkerOptions, sock: socket.socket | None,
                 workers: int) -> None:
        self.pipeline, self.settings, self.options, self.sock = pipeline, settings, options, sock
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_Worker | None] = [None] * workers
        self.lock = threading.Lock()  # self.workers is replaced by the main thread, read by the accepting thread
        self.next = 0
        self.stopping = False
        self.signalled: int | None = None

    def start(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ready = self.context.Event()
        # Set while the worker's interpreter starts, so prometheus_client is in multiprocess mode from its import on.
        saved = os.environ.get(METRICS_ENV)
        if self.options.metrics_dir:
            os.environ[METRICS_ENV] = self.options.metrics_dir
        try:
            proc = self.context.Process(target=worker_main, name=f"hpi-serve-worker-{index}",
                                        args=(self.pipeline, self.settings, self.options, theirs, ready, index))
            proc.start()
        finally:
            if saved is None:
                os.environ.pop(METRICS_ENV, None)
            else:
                os.environ[METRICS_ENV] = saved
            theirs.close()  # the worker has its own copy; once it dies, handing it a connection fails at once
        with self.lock:
            self.workers[index] = _Worker(proc, ours, ready, time.monotonic())
        logger.info("worker %d started (pid %d)", index, proc.pid)

    def run(self) -> int:
        def on_signal(signum: int, _frame: Any) -> None:
            self.signalled = self.signalled or signum
            self.stopping = True

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        acceptor = threading.Thread(target=self.accept_forever, name="hpi-serve-accept", daemon=True)
        try:
            for index in range(len(self.workers)):
                self.start(index)
            acceptor.start()
            code = self.watch()
        finally:
            self.stopping = True
            if acceptor.is_alive():
                acceptor.join(5.0)
            # New connections are refused from here on (not accepted and then reset by a stopping worker); those the
            # kernel accepted already go to the workers, which get a moment to read their requests before SIGTERM.
            handed = self.drain_backlog()
            self.close_listener()
            if handed:
                time.sleep(0.5)
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self.signalled is not None:
            logger.warning("hpi serve stopped on %s after its %d workers drained their requests",
                           signal.Signals(self.signalled).name, len(self.workers))
        return code

    def drain_backlog(self) -> int:
        """Hand every connection still waiting in the listening socket's backlog to a worker; how many."""
        if self.sock is None or self.sock.fileno() == -1:
            return 0
        self.sock.setblocking(False)
        handed = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return handed
            with conn:
                handed += self.hand(conn, attempts=40)

    def close_listener(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def watch(self) -> int:
        while not self.stopping:
            wait([w.process.sentinel for w in self.workers if w is not None], timeout=0.5)
            for index, worker in enumerate(self.workers):
                if worker is None or worker.process.is_alive() or self.stopping:
                    continue
                self._forget(worker)
                if time.monotonic() - worker.started < CRASH_WINDOW_S:
                    logger.error("worker %d exited with code %s within %.0f s of its start; stopping the server",
                                 index, worker.process.exitcode, CRASH_WINDOW_S)
                    return 1
                logger.warning("worker %d exited with code %s; starting it again", index, worker.process.exitcode)
                self.start(index)
        return 0

    def accept_forever(self) -> None:
        """Accept connections and hand each to the next ready worker (round robin), until stopping."""
        self.sock.settimeout(0.25)
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if not self.stopping:
                    logger.warning("accept failed: %s", exc)
                    time.sleep(0.05)
                continue
            with conn:  # accepted: a worker answers it, even if the stop began meanwhile
                self.hand(conn) or self.hand(conn, attempts=40)

    def hand(self, conn: socket.socket, attempts: int | None = None) -> bool:
        """Pass ``conn`` to a ready worker; while none is ready (all starting), wait (at most ``attempts`` rounds
        of 50 ms, even while stopping; else until stopping). False if none took it."""
        while (attempts > 0) if attempts is not None else not self.stopping:
            attempts = None if attempts is None else attempts - 1
            with self.lock:
                for _ in range(len(self.workers)):
                    worker = self.workers[self.next]
                    self.next = (self.next + 1) % len(self.workers)
                    if worker is None or not worker.ready.is_set():
                        continue
                    try:
                        socket.send_fds(worker.channel, [b"c"], [conn.fileno()])
                        return True
                    except OSError:  # the worker died; the main thread restarts it
                        continue
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM every worker (uvicorn's graceful shutdown, then the app drains its queues), wait, then kill."""
        live = [w for w in self.workers if w is not None and w.process.is_alive()]
        for worker in live:
            worker.process.terminate()
        deadline = time.monotonic() + self.options.graceful_timeout_s + self.settings.drain_timeout_s + 10.0
        for worker in live:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                logger.error("worker pid %d did not stop in time; killing it", worker.process.pid)
                worker.process.kill()
                worker.process.join(5.0)
        for worker in self.workers:
            if worker is not None:
                self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        """A dead worker gets no more connections, and its live gauges (requests in flight) no longer count."""
        worker.channel.close()
        if self.options.metrics_dir and worker.process.pid is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.process.pid, self.options.metrics_dir)


def worker_main(pipeline: str, settings: ServeSettings, options: WorkerOptions, channel: socket.socket, ready: Any,
                index: int) -> None:
    """One worker process: its own app and engine, serving the connections the supervisor hands it."""
    os.setpgrp()  # a terminal's Ctrl-C reaches only the supervisor, which stops the workers once
    logging.basicConfig(level=options.log_level.upper(), format=f"%(levelname)s worker {index} %(name)s: %(message)s")
    from hpi.serving.app import create_app
    from hpi.serving.observability import configure_access_log

    if settings.access_log:
        configure_access_log(options.log_level)
    app = create_app(pipeline, settings, worker=index, metrics_dir=options.metrics_dir)
    config = server_config(app, settings, log_level=options.log_level, graceful_timeout_s=options.graceful_timeout_s)
    _HandedConnectionsServer(config, channel, ready).run()


class _HandedConnectionsServer(HpiServer):
    """uvicorn serving the connections that arrive over ``channel`` instead of listening itself.

    Each connection gets uvicorn's own HTTP protocol object, made as uvicorn makes it for a connection it accepted, so
    keep-alive, the deadlines and graceful shutdown (which waits for the connections it tracks) work as usual.
    """

    announce_stop = False

    def __init__(self, config: Any, channel: socket.socket, ready: Any) -> None:
        super().__init__(config)
        self.channel, self.ready = channel, ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the app's lifespan (the model loads), no listening socket
        if self.should_exit:
            return
        loop = asyncio.get_running_loop()
        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), self._receive, loop)
        self.ready.set()

    def _receive(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            message, fds, _, _ = socket.recv_fds(self.channel, 16, 16)
        except BlockingIOError:
            return
        except OSError:
            message, fds = b"", []
        if not message and not fds:  # the supervisor is gone: stop, as on SIGTERM
            loop.remove_reader(self.channel.fileno())
            self.should_exit = True
            return
        # Served even while stopping: the supervisor accepted them before it closed its listening socket.
        for fd in fds:
            self.adopt(socket.socket(fileno=fd))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.channel.fileno() != -1:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.channel.fileno())
            self.channel.setblocking(False)
            while True:  # connections handed over but not read yet
                try:
                    _, fds, _, _ = socket.recv_fds(self.channel, 16, 16)
                except OSError:
                    break
                if not fds:
                    break
                for fd in fds:
                    self.adopt(socket.socket(fileno=fd))
            self.channel.close()
        await super().shutdown(sockets=None)
