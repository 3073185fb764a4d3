"""hpi/serving/workers.py: ``hpi serve --workers N``, several processes on one port adding up their metrics."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from hpi.errors import InvalidConfigError
from hpi.serving import workers
from hpi.serving.common import ServeSettings
from hpi.serving.workers import WorkerOptions, worker_settings
from tests.conftest import free_port
from tests.serving.conftest import b64, jpeg_bytes

pytestmark = pytest.mark.serving

ROOT = Path(__file__).resolve().parents[2]


def test_workers_share_the_cores_unless_told():
    s = worker_settings(ServeSettings(), workers=2, cores=4)
    assert s.hpi_config == {"threads": 2} and s.cpu_workers == 3
    s = worker_settings(ServeSettings(hpi_config={"threads": 3, "backend": "openvino"}, cpu_workers=1), 2, cores=4)
    assert s.hpi_config == {"threads": 3, "backend": "openvino"} and s.cpu_workers == 1
    assert worker_settings(ServeSettings(), workers=8, cores=2).hpi_config == {"threads": 1}
    with pytest.raises(InvalidConfigError, match="at least 1"):
        worker_settings(ServeSettings(), workers=0)


def test_shitu_is_served_by_one_process(monkeypatch):
    closed = []
    shitu = SimpleNamespace(build_index=lambda *a: None, close=lambda: closed.append(True))
    monkeypatch.setattr("hpi.pipelines.create_pipeline", lambda *a, **k: shitu)
    with pytest.raises(InvalidConfigError, match="--workers 1"):
        workers.prepare("shitu.yaml", ServeSettings())
    assert closed == [True]  # what was built to check is closed again
    with pytest.raises(InvalidConfigError, match="--workers 1"):  # by name: refused before anything is built
        workers.prepare("PP-ShiTuV2", ServeSettings())
    assert closed == [True]


class FakeProcess:
    def __init__(self, alive: bool = True, exitcode: int | None = None) -> None:
        self.alive, self.exitcode, self.pid, self.sentinel = alive, exitcode, None, -1

    def is_alive(self) -> bool:
        return self.alive


class FakeEvent:
    def __init__(self, ready: bool = True) -> None:
        self.ready = ready

    def is_set(self) -> bool:
        return self.ready


def fake_worker(alive: bool = True, exitcode: int | None = None, started_ago_s: float = 60.0,
                ready: bool = True) -> workers._Worker:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return workers._Worker(FakeProcess(alive, exitcode), a, FakeEvent(ready), time.monotonic() - started_ago_s), b


def supervisor_with(fakes: list[workers._Worker], monkeypatch) -> workers._Supervisor:
    sup = workers._Supervisor("p.yaml", ServeSettings(), WorkerOptions(), sock=None, workers=len(fakes))
    sup.workers = list(fakes)
    monkeypatch.setattr(workers, "wait", lambda sentinels, timeout: None)
    return sup


def test_a_worker_that_dies_is_started_again(monkeypatch):
    (w0, _), (w1, _) = fake_worker(), fake_worker(alive=False, exitcode=-9)
    sup = supervisor_with([w0, w1], monkeypatch)
    restarted = []

    def start(index):
        restarted.append(index)
        sup.workers[index] = fake_worker()[0]
        sup.stopping = True  # end the watch after one restart

    sup.start = start
    assert sup.watch() == 0 and restarted == [1]
    assert w1.channel.fileno() == -1  # the dead worker's channel is closed: it gets no more connections


def test_a_worker_that_dies_right_after_its_start_stops_the_server(monkeypatch):
    (w0, _), (w1, _) = fake_worker(), fake_worker(alive=False, exitcode=1, started_ago_s=1.0)
    sup = supervisor_with([w0, w1], monkeypatch)
    sup.start = lambda index: pytest.fail("a crash-looping worker must not be restarted")
    assert sup.watch() == 1


def test_connections_go_to_ready_workers_in_turn(monkeypatch):
    (w0, r0), (w1, r1), (w2, r2) = fake_worker(), fake_worker(ready=False), fake_worker()
    sup = supervisor_with([w0, w1, w2], monkeypatch)
    got = {0: 0, 2: 0}
    for _ in range(6):
        a, b = socket.socketpair()
        with a, b:
            assert sup.hand(a)
    for index, end in ((0, r0), (2, r2)):
        end.setblocking(False)
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(end, 16, 16)
            except BlockingIOError:
                break
            got[index] += len(fds)
            for fd in fds:
                os.close(fd)
    assert got == {0: 3, 2: 3}  # the worker still starting got none
    r1.setblocking(False)
    with pytest.raises(BlockingIOError):
        r1.recv(16)
    w2.channel.close()  # a worker that died: its share goes to the next one
    r2.close()
    a, b = socket.socketpair()
    with a, b:
        assert sup.hand(a) and sup.hand(a)
    message, fds, _, _ = socket.recv_fds(r0, 16, 16)
    assert len(fds) == 1


def children_of(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return out


def metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " ")]


def start_two_workers(toy_dir: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m hpi.serving --workers 2`` on the toy model, with its caches and temporary files under tmp_path."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"pipeline_name": "image_classification",
                                      "Pipeline": {"model": "ToyNet", "model_dir": str(toy_dir), "topk": 3}}))
    port = free_port()
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "HPI_CACHE_DIR": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "hpi.serving", "--pipeline", str(config), "--port", str(port),
                               "--device", "cpu", "--workers", "2", "--log-level", "warning", "--no-access-log"],
                              cwd=tmp_path, env=env)
    return server, port


def wait_for_workers(server: subprocess.Popen[bytes], port: int, count: int = 2) -> list[int]:
    """Wait until ``count`` workers serve (each has written its metrics); their process ids."""
    deadline = time.monotonic() + 180
    while True:
        assert server.poll() is None, "the server exited"
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            if len(set(re.findall(r'worker="(\d+)"', text))) == count:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the workers did not come up"
        time.sleep(0.3)
    pids = [p for p in children_of(server.pid)
            if "multiprocessing.spawn" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    assert len(pids) == count
    return pids


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads worker processes from /proc")
def test_two_workers_answer_on_one_port_and_add_up_their_metrics(toy_dir, tmp_path):
    server, port = start_two_workers(toy_dir, tmp_path)
    try:
        worker_pids = wait_for_workers(server, port)
        assert len(os.listdir(tmp_path / "tmp")) == 1  # the metrics directory the workers share
        body = {"image": b64(jpeg_bytes("coffee")), "visualize": False}

        def classify(_):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                return [client.post("/image-classification", json=body).json()["errorCode"] for _ in range(4)]

        with ThreadPoolExecutor(6) as pool:
            codes = sum(pool.map(classify, range(6)), [])
        assert codes == [0] * 24
        # every worker writes its batcher counters once a second: wait until both workers' have arrived
        deadline = time.monotonic() + 60
        while True:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            counted = [float(line.rsplit(" ", 1)[1]) for line in metric_lines(text, "hpi_batch_items_total")]
            if sum(counted) >= 24 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        requests = metric_lines(text, "hpi_requests_total")
        assert [r for r in requests if 'endpoint="/image-classification"' in r and 'status="200"' in r] == [
            'hpi_requests_total{endpoint="/image-classification",method="POST",status="200"} 24.0']
        items = metric_lines(text, "hpi_batch_items_total")
        assert {re.search(r'worker="(\d+)"', line).group(1) for line in items} == {"0", "1"}
        # 6 keep-alive connections of 4 requests each, handed out in turn: 12 requests per worker
        assert sorted(float(line.rsplit(" ", 1)[1]) for line in items) == [12.0, 12.0]
        assert metric_lines(text, "hpi_requests_in_flight") == ["hpi_requests_in_flight 1.0"]  # this scrape
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=90)
    assert code == 0
    assert not any(running(p) for p in worker_pids)
    assert os.listdir(tmp_path / "tmp") == []  # the metrics directory is removed


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads worker processes from /proc")
def test_workers_stop_when_the_supervisor_is_killed(toy_dir, tmp_path):
    server, port = start_two_workers(toy_dir, tmp_path)
    try:
        worker_pids = wait_for_workers(server, port)
    finally:
        server.kill()  # no chance to stop its workers: they notice their connection channel close
        server.wait(timeout=30)
    deadline = time.monotonic() + 60
    while any(running(p) for p in worker_pids):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.3)
