"""hpi/serving/server.py: deadlines for slow clients, refusals in the protocol's shape, counted and logged.

The slow-client tests run ``hpi serve`` in a child process with ``--max-connections 8`` and 2 s deadlines, and hold
20 connections that never finish their request: the limit must stay out of their reach, ``/health`` and a real
client must be answered meanwhile, and every stalled connection must be answered 408 and closed within the deadline
plus one second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time

import httpx
import pytest

from hpi.serving.limits import ConcurrencyLimitMiddleware
from hpi.serving.observability import ObserveMiddleware, ServerMetrics
from hpi.serving.server import ConnectionDeadlines, raw_response
from tests.serving.conftest import ServerProcess, b64, jpeg_bytes

pytestmark = pytest.mark.serving

DEADLINE_S = 2.0
STALLED = 20


@pytest.fixture(scope="module")
def guarded_server(toy_dir, tmp_path_factory):
    server = ServerProcess(toy_dir, tmp_path_factory.mktemp("guarded"), "--max-connections", "8",
                           "--header-timeout", str(DEADLINE_S), "--body-timeout", str(DEADLINE_S))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def refusals(url: str, reason: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(rf'^hpi_refusals_total{{reason="{reason}"}} ([0-9.e+]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open at ``deadline``."""
    data = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"the connection was still open at the deadline; received so far: {data[:200]!r}")
        if not chunk:
            return data
        data += chunk


def assert_served_while_stalled(url: str, started: float) -> None:
    """/health and a real classification answered within the deadline plus one second of the stall's start."""
    limit = started + DEADLINE_S + 1.0
    with httpx.Client(base_url=url, timeout=DEADLINE_S + 1.0) as client:
        assert client.get("/health").status_code == 200
        answer = client.post("/image-classification", json={"image": b64(jpeg_bytes()), "visualize": False})
        assert answer.status_code == 200 and answer.json()["errorCode"] == 0
    assert time.monotonic() < limit


def assert_answered_408_and_closed(sockets: list[socket.socket], started: float) -> None:
    deadline = started + DEADLINE_S + 1.0
    for sock in sockets:
        with sock:
            data = read_until_closed(sock, deadline)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), data[:200]
        refusal = json.loads(body)
        assert refusal["errorCode"] == 408 and refusal["logId"] and "did not arrive within" in refusal["errorMsg"]


def test_stalled_headers_leave_the_server_to_real_clients(guarded_server):
    before = refusals(guarded_server.url, "header_timeout")
    started = time.monotonic()
    stalled = []
    for _ in range(STALLED):
        sock = socket.create_connection(("127.0.0.1", guarded_server.port), timeout=5)
        sock.sendall(b"POST /image-classification HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        stalled.append(sock)
    assert_served_while_stalled(guarded_server.url, started)
    assert_answered_408_and_closed(stalled, started)
    assert refusals(guarded_server.url, "header_timeout") - before == STALLED
    assert guarded_server.output().count('"refusal": "header_timeout"') >= STALLED


def test_stalled_bodies_leave_the_server_to_real_clients(guarded_server):
    before = refusals(guarded_server.url, "body_timeout")
    started = time.monotonic()
    stalled = []
    for _ in range(STALLED):
        sock = socket.create_connection(("127.0.0.1", guarded_server.port), timeout=5)
        sock.sendall(b"POST /image-classification HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"image\": \"")
        stalled.append(sock)
    assert_served_while_stalled(guarded_server.url, started)
    assert_answered_408_and_closed(stalled, started)
    deadline = time.monotonic() + 5  # the app records each request once its task has seen the disconnect
    while refusals(guarded_server.url, "body_timeout") - before < STALLED and time.monotonic() < deadline:
        time.sleep(0.1)
    assert refusals(guarded_server.url, "body_timeout") - before == STALLED


def test_a_keep_alive_request_that_stalls_is_closed_too(guarded_server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", guarded_server.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        head, _, body = first.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))
        while len(body) < length:
            body += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200") and len(body) == length
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # the second request's headers never end
        data = read_until_closed(sock, time.monotonic() + DEADLINE_S + 1.0)
    assert data.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < DEADLINE_S + 1.5


def test_a_malformed_content_length_is_answered_in_the_protocol_shape(guarded_server):
    before = refusals(guarded_server.url, "malformed_request")
    with socket.create_connection(("127.0.0.1", guarded_server.port), timeout=5) as sock:
        sock.sendall(b"POST /image-classification HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n")
        data = read_until_closed(sock, time.monotonic() + 5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
    answer = json.loads(body)
    assert answer["errorCode"] == 400 and answer["errorMsg"].startswith("malformed HTTP request")
    assert refusals(guarded_server.url, "malformed_request") - before == 1
    assert f'"logId": "{answer["logId"]}"' in guarded_server.output()


def test_the_connection_limit_refuses_in_the_protocol_shape_and_counts_it(caplog):
    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    metrics = ServerMetrics([])
    app = ObserveMiddleware(ConcurrencyLimitMiddleware(slow_app, max_requests=1, exempt=("/health",)),
                            metrics=metrics, endpoints={"/image-classification"}, access_log=True)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hpi") as client:
            first = asyncio.create_task(client.post("/image-classification", json={}))
            while app.app.active < 1:
                await asyncio.sleep(0.01)
            refused = await client.post("/image-classification", json={})
            release.set()
            return await first, refused

    with caplog.at_level(logging.INFO, logger="hpi.serving.access"):
        first, refused = asyncio.run(scenario())
    assert first.status_code == 200
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    body = refused.json()
    assert body["errorCode"] == 503 and "limit of 1 requests" in body["errorMsg"] and body["logId"]
    text = metrics.exposition()[0].decode()
    assert 'hpi_refusals_total{reason="connection_limit"} 1.0' in text
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "hpi.serving.access"]
    assert [line.get("refusal") for line in lines] == ["connection_limit", None]
    assert lines[0]["logId"] == body["logId"] and lines[0]["status"] == 503


def test_deadlines_must_be_positive():
    with pytest.raises(Exception, match="header_timeout_s must be positive"):
        ConnectionDeadlines(header_timeout_s=0)


def test_raw_responses_close_the_connection():
    data = raw_response(408, "Request Timeout", b'{"errorCode": 408}')
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head and b"content-length: 18" in head and body == b'{"errorCode": 408}'
