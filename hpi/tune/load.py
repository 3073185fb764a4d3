"""The client load generator: keep-alive connections sending one request in a loop to ``hpi serve`` on loopback.

One load generator for everything that loads the server (``hpi tune`` and ``benchmarks/load_test.py``). It is a
minimal asyncio HTTP/1.1 client (precomputed request bytes, Content-Length framing), so that the load generator,
which shares the CPU with the server, costs as little as possible. Every response is checked (HTTP 200,
``errorCode`` 0, categories present); anything else counts as an error.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

REQUEST_TIMEOUT_S = 60.0  # one request's wait for its response before it counts as an error
CLASSIFY_PATH = "/image-classification"


@dataclass
class LoadStats:
    """What a load run saw."""

    latencies_ms: list[float] = field(default_factory=list)  # successful requests in the measured window
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0  # requests started in the measured window
    total: int = 0  # requests started, warm-up included

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def merge(self, other: LoadStats) -> None:
        self.latencies_ms += other.latencies_ms
        for kind, count in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        self.sent += other.sent
        self.total += other.total


class Budget:
    """How many requests may still start (bounds a whole run)."""

    def __init__(self, count: int) -> None:
        self.left = count

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def build_request(port: int, body: bytes, path: str = CLASSIFY_PATH, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one keep-alive ``POST path`` with ``body`` (JSON, or as ``headers`` say)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    kind = "" if headers and "Content-Type" in headers else "Content-Type: application/json\r\n"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{kind}{extra}"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode("ascii") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


Check = Callable[[int, dict[str, str], bytes], str | None]  # (status, headers, body) -> what was wrong, or None


def check_body(status: int, headers: dict[str, str], body: bytes) -> str | None:
    """None for a correct ``hpi serve`` classification response, else what was wrong."""
    if status != 200:
        return f"http_{status}"
    try:
        data = json.loads(body)
    except ValueError:
        return "bad_json"
    if data.get("errorCode") != 0:
        return f"error_code_{data.get('errorCode')}"
    result = data.get("result") or {}
    if not result.get("categories") or not isinstance(result.get("image"), str | None):
        return "bad_result"
    return None


async def client(port: int, request: bytes, measure_from: float, stop_at: float, budget: Budget,
                 stats: LoadStats, check: Check = check_body) -> None:
    """One connection sending ``request`` in a loop until ``stop_at`` (or the budget is spent); ``check`` judges
    each response."""
    reader = writer = None
    while True:
        now = time.perf_counter()
        if now >= stop_at or not budget.take():
            break
        measured = now >= measure_from
        stats.total += 1
        if measured:
            stats.sent += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            start = time.perf_counter_ns()
            writer.write(request)
            await writer.drain()
            status, headers, body = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
            latency_ms = (time.perf_counter_ns() - start) / 1e6
            problem = check(status, headers, body)
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
        except (OSError, ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
            problem = type(exc).__name__
            if writer is not None:
                writer.close()
            reader = writer = None
        if measured:
            if problem is None:
                stats.latencies_ms.append(latency_ms)
            else:
                stats.error(problem)
    if writer is not None:
        writer.close()


async def run_load(port: int, request: bytes, clients: int, warmup_s: float, duration_s: float, budget: Budget,
                   check: Check = check_body) -> tuple[LoadStats, float]:
    """``clients`` connections in a loop: ``warmup_s`` unmeasured, then ``duration_s`` measured. Returns the stats
    and the measured seconds."""
    stats = LoadStats()
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    await asyncio.gather(*(client(port, request, measure_from, stop_at, budget, stats, check)
                           for _ in range(clients)))
    measured_s = max(1e-9, min(time.perf_counter(), stop_at) - measure_from)
    return stats, measured_s


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values`` in ms, rounded to 0.01 (None for no values)."""
    return round(float(np.percentile(values, q)), 2) if values else None


def _get(port: int, path: str, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def http_get(port: int, path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """The status and body of ``GET path`` on the loopback server (one connection, closed after)."""
    status, _, body = _get(port, path, timeout_s)
    return status, body


def http_head(port: int, path: str, timeout_s: float = 10.0) -> tuple[int, dict[str, str]]:
    """The status and headers (lower-case names) of ``GET path`` on the loopback server."""
    status, headers, _ = _get(port, path, timeout_s)
    return status, headers
