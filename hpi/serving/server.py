"""uvicorn as ``hpi serve`` runs it: connection deadlines, refusals in the protocol's shape, and a clean stop.

uvicorn has no header timeout: a client that sends ``POST / HTTP/1.1\\r\\nX-Slow: `` and waits holds its connection
for as long as it likes, and uvicorn's ``limit_concurrency`` counts such connections, so a handful of them lock out
every client. :func:`guarded_protocol` wraps uvicorn's own HTTP protocol class (httptools', else h11's) with:

* a **header deadline**: from the first byte of a request (or the connection's opening) its headers must be complete
  within ``header_timeout_s``; otherwise the client gets ``408`` in the protocol's JSON shape and the connection is
  closed;
* a **body deadline**: once the headers are in, the body must be complete within ``body_timeout_s`` (time the server
  itself stopped reading, because the app had not taken the body yet, does not count against the client);
* uvicorn's plain-text ``400 Invalid HTTP request received.`` (a malformed ``Content-Length``, a broken request line)
  answered as JSON in the protocol's shape instead.

The connection limit is not uvicorn's: :class:`hpi.serving.limits.ConcurrencyLimitMiddleware` counts requests whose
headers are complete, so a client that never finishes its headers cannot reach it. Every refusal here is reported to
a ``on_refusal(reason, status, client)`` callback, which counts it in ``/metrics`` and writes it to the access log.

:class:`HpiServer` is uvicorn's server with one change on SIGTERM/SIGINT: after its graceful shutdown (no new
connections, accepted requests finished, the app's queues drained) it logs one line and returns, so that ``hpi
serve`` exits 0 instead of re-raising the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import threading
from collections.abc import Callable, Generator
from typing import Any

import uvicorn

from hpi.errors import InvalidConfigError
from hpi.serving.common import ServeSettings, new_log_id
from hpi.serving.limits import error_body

logger = logging.getLogger(__name__)

RefusalCallback = Callable[[str, int, "tuple[str, int] | None", str], None]  # reason, status, client, logId

HEADER_TIMEOUT = "header_timeout"
BODY_TIMEOUT = "body_timeout"
MALFORMED_REQUEST = "malformed_request"


@dataclasses.dataclass(frozen=True)
class ConnectionDeadlines:
    """How long a client may take to send a request (``ServeSettings.header_timeout_s`` and ``body_timeout_s``).

    Attributes:
        header_timeout_s: from a connection's opening, or the first byte of its next request, until the request's
            headers are complete.
        body_timeout_s: from the headers until the body is complete.
    """

    header_timeout_s: float = 5.0
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise InvalidConfigError(f"{name} must be positive, got {getattr(self, name)!r}")


def _base_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class as its ``http="auto"`` picks it: httptools' if installed, else h11's."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:  # pragma: no cover - without the standard extra
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


def raw_response(status: int, reason: str, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """An HTTP/1.1 response with a JSON body that closes the connection, written straight to a transport."""
    head = [f"HTTP/1.1 {status} {reason}\r\n".encode("ascii"), b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n", b"connection: close\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in extra]
    return b"".join(head) + b"\r\n" + body


def guarded_protocol(deadlines: ConnectionDeadlines, on_refusal: RefusalCallback | None = None,
                     base: type[asyncio.Protocol] | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class with header and body deadlines and JSON 400s (see the module docstring); pass
    it as ``uvicorn.Config(http=...)``."""
    base = base or _base_protocol()
    report = on_refusal or (lambda *_: None)

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        _timer: asyncio.TimerHandle | None = None
        _seen_cycle: Any = None
        _waiting_for: str | None = None  # HEADER_TIMEOUT or BODY_TIMEOUT while a deadline runs

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm(HEADER_TIMEOUT, deadlines.header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()
            if self._waiting_for is None and self._between_requests() and not self.transport.is_closing():
                # The first bytes of a keep-alive request whose headers are not complete yet. A request that
                # arrives whole (the common case) never arms a timer: it costs no timer handle per request.
                self._arm(HEADER_TIMEOUT, deadlines.header_timeout_s)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _follow(self) -> None:
            """Move the deadline on after uvicorn parsed what arrived: headers done, then body done."""
            cycle = self.cycle
            if cycle is not None and cycle is not self._seen_cycle:
                self._seen_cycle = cycle
                if getattr(self.server_state, "hpi_stopping", False):
                    cycle.keep_alive = False  # the server is stopping: answer this request, then close
                if cycle.more_body and not cycle.response_complete:
                    self._arm(BODY_TIMEOUT, deadlines.body_timeout_s)
                else:
                    self._disarm()
            elif self._waiting_for == BODY_TIMEOUT and (cycle is None or not cycle.more_body):
                self._disarm()

        def _arm(self, what: str, seconds: float) -> None:
            self._disarm()
            self._waiting_for = what
            self._timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._waiting_for = None, None

        def _expired(self) -> None:
            what, self._timer, self._waiting_for = self._waiting_for, None, None
            if self.transport is None or self.transport.is_closing():
                return
            if what == BODY_TIMEOUT:
                cycle = self.cycle
                if cycle is None or not cycle.more_body:
                    return
                if self.flow.read_paused:  # the server, not the client, is behind: give the client its time again
                    self._arm(BODY_TIMEOUT, deadlines.body_timeout_s)
                    return
                log_id = cycle.scope.get("state", {}).setdefault("log_id", new_log_id())
                cycle.scope["state"]["refusal"] = BODY_TIMEOUT
                message = f"the request body did not arrive within {deadlines.body_timeout_s:g} s"
                if not cycle.response_started:
                    self.transport.write(raw_response(408, "Request Timeout", error_body(408, message, log_id)))
                    cycle.response_started = True  # the app's own answer, if any, is dropped
                    cycle.keep_alive = False
                # The app's access-log line and metrics record this request (its state says why it ended).
                self.transport.close()
                return
            if what == HEADER_TIMEOUT and self._between_requests():
                log_id = new_log_id()
                message = f"the request headers did not arrive within {deadlines.header_timeout_s:g} s"
                self.transport.write(raw_response(408, "Request Timeout", error_body(408, message, log_id)))
                self.transport.close()
                report(HEADER_TIMEOUT, 408, self.client, log_id)

        def shutdown(self) -> None:
            """On the server's graceful stop: a connection whose request has not (fully) arrived yet was accepted
            before the stop, so its request is still answered (within the header deadline), then it closes; an idle
            keep-alive connection closes now, as uvicorn does."""
            if self.cycle is None or (self.cycle.response_complete and self._waiting_for == HEADER_TIMEOUT):
                if self._waiting_for is None:
                    self._arm(HEADER_TIMEOUT, deadlines.header_timeout_s)
                return
            super().shutdown()

        def send_400_response(self, msg: str) -> None:
            log_id = new_log_id()
            self.transport.write(raw_response(400, "Bad Request", error_body(400, f"malformed HTTP request: {msg}",
                                                                             log_id)))
            self.transport.close()
            self._disarm()
            report(MALFORMED_REQUEST, 400, self.client, log_id)

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def refusal_reporter(app: Any) -> RefusalCallback:
    """The callback that counts a connection-level refusal in ``app``'s metrics and writes its access-log line."""
    from hpi.serving.observability import record_refusal

    def on_refusal(reason: str, status: int, client: tuple[str, int] | None, log_id: str) -> None:
        record_refusal(getattr(app.state, "metrics", None), reason, status, client, log_id,
                       access_log=getattr(app.state, "access_log", True))

    return on_refusal


def server_config(app: Any, settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8080,
                  log_level: str = "info", graceful_timeout_s: float = 30.0) -> uvicorn.Config:
    """The uvicorn configuration ``hpi serve`` runs ``app`` (made with ``settings``) with: its protocol guarded by
    the settings' deadlines; uvicorn's own access log and connection limit off, since hpi's middleware does both in
    the protocol's shape."""
    deadlines = ConnectionDeadlines(settings.header_timeout_s, settings.body_timeout_s)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          http=guarded_protocol(deadlines, refusal_reporter(app)),
                          limit_concurrency=None, timeout_keep_alive=5, access_log=False,
                          timeout_graceful_shutdown=graceful_timeout_s)


class HpiServer(uvicorn.Server):
    """uvicorn's server, which on SIGTERM/SIGINT stops gracefully, logs one line and returns (no re-raised
    signal, so the process exits 0).

    Its graceful stop first takes the connections still waiting in the listening socket's backlog (closing the
    socket would reset them) and answers their requests; a connection made after that is refused.
    """

    announce_stop = True  # log the one line; a worker process leaves it to its supervisor

    def protocol(self) -> asyncio.Protocol:
        """A protocol object for one connection, made as uvicorn makes it for one it accepted."""
        return new_protocol(self)

    def adopt(self, conn: Any) -> None:
        """Serve an accepted socket ``conn`` as if this server had accepted it."""
        adopt_connection(self, conn)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self.server_state.hpi_stopping = True  # type: ignore[attr-defined]
        take_backlog(self)
        await super().shutdown(sockets)  # closes the listening sockets first, in this same step

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._captured_signals and self.announce_stop:
            logger.warning("hpi serve stopped on %s after draining its requests",
                           signal.Signals(self._captured_signals[0]).name)


def new_protocol(server: uvicorn.Server) -> asyncio.Protocol:
    """A protocol object for one connection of ``server``, made as uvicorn makes it for one it accepted."""
    return server.config.http_protocol_class(config=server.config, server_state=server.server_state,
                                             app_state=server.lifespan.state)


def adopt_connection(server: uvicorn.Server, conn: Any) -> None:
    """Serve an accepted socket ``conn`` on ``server`` as if it had accepted it (from the server's event loop)."""
    conn.setblocking(False)
    loop = asyncio.get_running_loop()
    loop.create_task(loop.connect_accepted_socket(lambda: new_protocol(server), conn))


def take_backlog(server: uvicorn.Server) -> int:
    """Accept every connection waiting in ``server``'s listening sockets and serve it; how many.

    Closing a listening socket resets the connections the kernel has accepted but the server has not: a client
    that connected just before a graceful stop would see a reset instead of an answer. Call this in the same event
    loop step as the close (uvicorn's ``shutdown`` closes first thing)."""
    import os
    import socket

    taken = 0
    for listening_server in getattr(server, "servers", []):
        for listening in listening_server.sockets:
            listener = socket.socket(fileno=os.dup(listening.fileno()))
            try:
                listener.setblocking(False)
                while True:
                    try:
                        conn, _ = listener.accept()
                    except OSError:
                        break
                    adopt_connection(server, conn)
                    taken += 1
            finally:
                listener.close()
    return taken
