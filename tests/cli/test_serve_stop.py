"""``hpi serve`` stopping on SIGTERM during load: in-flight requests complete, new connections are refused (not
reset), the exit status is 0 or 143, no child process is left, and one log line says the server stopped.

Variants: one process and ``--workers 2`` here; ``--engine ray`` in tests/scaleout/test_ray.py (it needs a Ray
cluster).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import ServerProcess, b64, jpeg_bytes

pytestmark = [pytest.mark.serving, pytest.mark.skipif(not Path("/proc/self/task").is_dir(),
                                                      reason="reads child processes from /proc")]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...)."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            for tid in os.listdir(f"/proc/{parent}/task"):
                kids = [int(c) for c in Path(f"/proc/{parent}/task/{tid}/children").read_text().split()]
                found += kids
                queue += kids
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Load:
    """Client threads sending classifications, each on a new connection, recording every outcome."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url, self.stop = url, threading.Event()
        self.outcomes: list[tuple[float, float, str]] = []  # (sent, finished, "200" | "refused" | error name)
        self.lock = threading.Lock()
        self.body = {"image": b64(jpeg_bytes()), "visualize": False}
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                with httpx.Client(base_url=self.url, timeout=60, headers={"Connection": "close"}) as client:
                    answer = client.post("/image-classification", json=self.body)
                outcome = str(answer.status_code)
            except httpx.ConnectError as exc:
                outcome = "refused" if "refused" in str(exc).lower() else f"ConnectError: {exc}"
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            with self.lock:
                self.outcomes.append((sent, time.monotonic(), outcome))
            if outcome == "refused":
                time.sleep(0.05)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def served(self) -> int:
        with self.lock:
            return sum(outcome == "200" for *_, outcome in self.outcomes)


def refused_now(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def stop_under_load(server: ServerProcess, children: int = 0) -> None:
    """SIGTERM while three clients send requests; check what the module docstring promises (the server has at least
    ``children`` child processes)."""
    pids = descendants(server.process.pid)
    assert len(pids) >= children
    with Load(server.url) as load:
        deadline = time.monotonic() + 60
        while load.served() < 6:
            assert time.monotonic() < deadline, f"the load got no answers: {load.outcomes[-3:]}"
            time.sleep(0.05)
        # One request is in flight at the signal for certain: its headers and half its body are sent before it,
        # the rest after; it must still be answered.
        body = json.dumps(load.body).encode()
        in_flight = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        in_flight.sendall(b"POST /image-classification HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body[:len(body) // 2])
        time.sleep(0.2)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        in_flight.sendall(body[len(body) // 2:])
        with in_flight:
            answer = b""
            while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < 20:
                chunk = in_flight.recv(65536)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        code = server.process.wait(timeout=60)
        exited = time.monotonic()
        time.sleep(0.3)  # the clients meet the closed port
    assert code in (0, 143 - 256, -signal.SIGTERM), f"exit status {code}:\n{server.output()}"
    outcomes = load.outcomes
    strange = [o for o in outcomes if o[2] not in ("200", "refused")]
    assert not strange, f"requests neither answered nor refused: {strange[:5]}"
    assert any(o[2] == "refused" and o[0] > signalled for o in outcomes) or exited - signalled < 0.3
    assert refused_now(server.port)
    assert not [pid for pid in pids if alive(pid)], "a child process outlived the server"
    output = server.output()
    assert output.count("stopped on SIGTERM") == 1, output[-3000:]
    assert "Traceback" not in output


def test_one_process_stops_cleanly_under_load(toy_dir, tmp_path):
    server = ServerProcess(toy_dir, tmp_path, "--no-access-log")
    try:
        server.wait_ready()
        stop_under_load(server)
    finally:
        server.stop()


def test_two_workers_stop_cleanly_under_load(toy_dir, tmp_path):
    server = ServerProcess(toy_dir, tmp_path, "--workers", "2", "--no-access-log")
    try:
        server.wait_ready()
        deadline = time.monotonic() + 120  # both workers serving (the first ready one answers /health)
        while len([p for p in descendants(server.process.pid)
                   if "multiprocessing.spawn" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        stop_under_load(server, children=2)
    finally:
        server.stop()
