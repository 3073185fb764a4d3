"""Fixtures for the serving tests: a live uvicorn server on loopback, small models, encoded test images."""

from __future__ import annotations

import base64
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import hpi

IMAGES = Path(hpi.__file__).resolve().parent / "data" / "images"


class LiveServer:
    """An app served by uvicorn on 127.0.0.1 (an ephemeral port) in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    @property
    def service(self) -> Any:
        return self.app.state.service


@pytest.fixture(scope="session")
def toy_model(toy_dir, tmp_path_factory) -> Any:
    """The tiny seeded classifier (10 classes, 64x64), Paddle Inference on CPU."""
    model = hpi.create_model("ToyNet", toy_dir, device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))
    yield model
    model.close()


def jpeg_bytes(name: str = "chelsea") -> bytes:
    return (IMAGES / f"{name}.jpg").read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG header that declares ``width x height`` 8-bit RGB pixels, with a few bytes of data:
    a decompression bomb as far as the header goes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def encoded(image_bgr: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, image_bgr)
    assert ok
    return buf.tobytes()


ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``python -m hpi.serving`` (``hpi serve``) on the toy model in a child process on 127.0.0.1, with its caches and
    temporary files under ``tmp_path`` (``env`` overrides; Ray needs a short TMPDIR for its socket paths); its
    stdout+stderr go to ``tmp_path / "server.log"``."""

    def __init__(self, toy_dir: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        import os
        import subprocess
        import sys

        import yaml

        from tests.conftest import free_port

        config = tmp_path / "pipeline.yaml"
        config.write_text(yaml.safe_dump({"pipeline_name": "image_classification",
                                          "Pipeline": {"model": "ToyNet", "model_dir": str(toy_dir), "topk": 3}}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp_path / "tmp").mkdir(exist_ok=True)
        env = {**os.environ, "HPI_CACHE_DIR": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp"),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env or {})}
        self.log_path = tmp_path / "server.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hpi.serving", "--pipeline", str(config), "--port", str(self.port),
             "--device", "cpu", "--log-level", "info", *args],
            cwd=tmp_path, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None, f"the server exited:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not come up:\n{self.output()}"
            time.sleep(0.3)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 60.0) -> int:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.log.close()
        return self.process.returncode


@pytest.fixture
def serve_process(toy_dir, tmp_path):
    """Start ``hpi serve`` on the toy model with extra arguments: ``serve_process("--workers", "2")``; every
    server started is stopped after the test."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess(toy_dir, tmp_path, *args)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
