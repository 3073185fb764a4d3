"""``hpi triton serve`` starts a real tritonserver (nvidia-pytriton's) on loopback on an exported repository, and
``hpi triton load`` load-tests its ensemble with Triton's HTTP client and reports throughput."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpi.cli import main
from hpi.scaleout.triton import TritonExportOptions, export_triton_repository
from tests.conftest import free_port
from tests.scaleout import tritonserver

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def python_repo(triton_selection, tmp_path_factory):
    sel = triton_selection
    return export_triton_repository(sel.source, tmp_path_factory.mktemp("cli") / "repo",
                                    options=TritonExportOptions(engine_backend="python"), cache=sel.cache,
                                    record=sel.record, hpi_config=sel.cfg)


def test_serve_refuses_a_repository_the_bundled_server_cannot_run(triton_selection, tmp_path, capsys):
    sel = triton_selection
    repo = export_triton_repository(sel.source, tmp_path / "ort", options=TritonExportOptions(
        engine_backend="onnxruntime"), cache=sel.cache, record=sel.record, hpi_config=sel.cfg)
    assert main(["triton", "serve", str(repo.path)]) == 2
    err = capsys.readouterr().err
    assert "uses Triton's onnxruntime backend, which nvidia-pytriton's server lacks" in err
    assert "--engine-backend python" in err
    assert main(["triton", "serve", str(tmp_path)]) == 2
    assert "is not a repository written by hpi export --format triton" in capsys.readouterr().err


def test_serve_steps_are_printed(python_repo, capsys, tmp_path):
    assert main(["triton", "serve", str(python_repo.path), "--steps", "--venv", str(tmp_path / "v")]) == 0
    steps = capsys.readouterr().out
    assert f"-r {python_repo.path}/requirements.txt" in steps and "nvidia-pytriton" in steps
    assert "triton_python_backend_stub" in steps and f"--model-repository={python_repo.path}" in steps


def test_verify_command(python_repo, capsys, tmp_path):
    assert main(["triton", "verify", str(python_repo.path)]) == 0
    assert "intact" in capsys.readouterr().out
    altered = tmp_path / "altered"
    shutil.copytree(python_repo.path, altered)
    config = next(altered.rglob("config.pbtxt"))
    config.write_text(config.read_text() + "\n# edited by hand\n")
    assert main(["triton", "verify", str(altered)]) == 1  # the exit-code table's 1: a file is altered


def test_serve_command_runs_the_repository_and_load_reports_throughput(python_repo, capsys, tmp_path):
    reason = tritonserver.unsupported_reason()
    if reason:
        pytest.skip(f"environment: {reason}")
    venv = tritonserver.ensure_venv(python_repo.path)  # created once; a failure is a test failure
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:  # a file, not a pipe: the server's own log never blocks on a full pipe
        proc = subprocess.Popen([sys.executable, "-m", "hpi", "triton", "serve", str(python_repo.path), "--port",
                                 str(port), "--venv", str(venv)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        ready = []
        while not ready and proc.poll() is None and time.monotonic() < deadline:  # bounded wait for readiness
            ready = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("Triton serving")]
            time.sleep(0.5)
        assert ready, log.read_text(errors="replace")[-4000:]
        assert f"http://127.0.0.1:{port}" in ready[0] and "clients call ToyNet_ensemble" in ready[0]

        code = main(["triton", "load", "--url", f"127.0.0.1:{port}", "--model", "ToyNet_ensemble",
                     "--concurrency", "4", "--duration", "3", "--warmup", "1", "--json"])
        result = json.loads(capsys.readouterr().out)
        assert code == 0 and result["errors"] == 0 and result["first_error"] is None
        assert result["requests"] > 0 and result["throughput"] == pytest.approx(result["requests"] / 3)
        assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
        print(f"hpi triton load, ToyNet, concurrency 4: {result['throughput']:.1f} images/s, "
              f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    finally:
        proc.send_signal(signal.SIGTERM)  # hpi triton serve stops its tritonserver and exits
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise
    assert code == 0


def test_load_refuses_an_empty_image_directory(tmp_path, capsys):
    assert main(["triton", "load", "--model", "m", "--images", str(tmp_path)]) == 2
    assert "expected a directory with JPEG/PNG/BMP images" in capsys.readouterr().err
