"""Running a repository on the ``nvidia-pytriton`` wheel's ``tritonserver`` (Python backend only), for a local
trial (``hpi triton serve``) and the tests.

The wheel ships the server binary, its backends directory and Python-backend stubs per Python version; the stub of
this Python version is put in place as pytriton itself prepares it. The server listens on HTTP only (no gRPC, no
metrics port unless asked), on 127.0.0.1 unless another address is given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from hpi.errors import BackendUnavailableError
from hpi.scaleout.triton.environment import PYVER


def _site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3*/site-packages"))
    if not found:
        raise BackendUnavailableError(f"{venv} is not a virtual environment with site-packages")
    return found[0]


class TritonServer:
    """``tritonserver`` from a :func:`~hpi.scaleout.triton.environment.server_environment` venv serving one model
    repository; a context manager that waits until the server is ready and stops it on exit.

    Args:
        venv: the environment with ``nvidia-pytriton`` and the repository's requirements.
        repository: the model repository.
        host: the HTTP address (127.0.0.1: loopback only).
        port: the HTTP port; 0 picks a free one.
        start_timeout_s: how long to wait for readiness (the Python models load hpi and ONNX Runtime).
        log: where the server's output goes; default a file in a temporary directory (see :meth:`log_tail`).
    """

    def __init__(self, venv: Path, repository: Path, *, host: str = "127.0.0.1", port: int = 0,
                 start_timeout_s: float = 180, log: IO[bytes] | None = None) -> None:
        self.venv, self.repository, self.start_timeout_s = Path(venv), Path(repository).resolve(), start_timeout_s
        self.host = host
        self.port = port or _free_port(host)
        self.url = f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="hpi-triton-"))
        self.log = self.workdir / "tritonserver.log"
        self._log_target = log
        self._log_handle: IO[bytes] | None = None

    def _layout(self) -> tuple[Path, Path]:
        dist = _site_packages(self.venv) / "pytriton" / "tritonserver"
        stub = dist / "python_backend_stubs" / PYVER / "triton_python_backend_stub"
        if not stub.exists():
            raise BackendUnavailableError(f"{stub} is missing: this nvidia-pytriton has no Python backend stub for "
                                          f"Python {PYVER}")
        backends = self.workdir / "backends"
        shutil.copytree(dist / "backends", backends)
        shutil.copy(stub, backends / "python" / "triton_python_backend_stub")  # as pytriton itself prepares it
        return dist / "bin" / "tritonserver", backends

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The server's command line and environment."""
        binary, backends = self._layout()
        site = _site_packages(self.venv)
        libs = [str(site / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
        env = {**os.environ, "LD_LIBRARY_PATH": ":".join(filter(None, [*libs, os.environ.get("LD_LIBRARY_PATH")])),
               "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
        env.pop("PYTHONPATH", None)  # the models import the hpi installed in the venv, not the caller's checkout
        cmd = [str(binary), f"--model-repository={self.repository}", f"--backend-directory={backends}",
               f"--http-address={self.host}", f"--http-port={self.port}", "--allow-grpc=false",
               "--allow-metrics=false", "--exit-timeout-secs=10", "--log-verbose=0"]
        return cmd, env

    def __enter__(self) -> TritonServer:
        cmd, env = self.command()
        self._log_handle = self._log_target or open(self.log, "wb")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(cmd, stdout=self._log_handle, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.workdir)
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.url)
        try:
            return self._wait_ready(client, self.proc)
        finally:
            client.close()  # an open keep-alive connection would hold the server's shutdown for its exit timeout

    def _wait_ready(self, client: Any, proc: subprocess.Popen[bytes]) -> TritonServer:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if proc.poll() is not None:
                code, tail = proc.returncode, self.log_tail()
                self.__exit__()
                raise BackendUnavailableError(f"tritonserver exited with {code}:\n{tail}")
            try:
                if client.is_server_ready():
                    return self
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.__exit__()
                raise BackendUnavailableError(f"tritonserver not ready after {self.start_timeout_s} s:\n{tail}")
            time.sleep(0.25)

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        if self.proc is None:
            raise BackendUnavailableError("the server was not started")
        return self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log_handle is not None and self._log_target is None:
            self._log_handle.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1" if host in ("0.0.0.0", "") else host, 0))
        return int(sock.getsockname()[1])
