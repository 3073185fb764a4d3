"""hpi/cli/serve.py: ``hpi serve`` options to settings, and the command answering the seeds' client from a YAML."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from hpi.cli.serve import register, settings_from_args
from tests.conftest import free_port
from tests.serving.conftest import b64, jpeg_bytes
from tests.serving.test_app_classification import CLIENT

pytestmark = pytest.mark.serving

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hpi")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def test_defaults_are_safe():
    args = parse("--pipeline", "image_classification")
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    settings = settings_from_args(args)
    assert not settings.limits.urls_enabled and settings.visualize
    assert settings.batching.max_batch == 8 and settings.hpi_config is None and not settings.use_hpip


def test_options_reach_the_settings():
    args = parse("--pipeline", "PP-ShiTuV2", "--port", "9000", "--use-hpip", "--threads", "2", "--backend",
                 "onnxruntime", "--max-batch", "4", "--batch-window-ms", "5", "--max-queue", "10", "--max-body-mb", "1",
                 "--max-image-mb", "0.5", "--max-megapixels", "2", "--allow-url-host", "images.example.com",
                 "--allow-url-host", "127.0.0.1:8000", "--index-dir", "/tmp/x", "--index", "/tmp/y",
                 "--no-visualize", "--request-timeout", "3")
    s = settings_from_args(args)
    assert s.use_hpip and s.hpi_config == {"backend": "onnxruntime", "threads": 2}
    assert (s.batching.max_batch, s.batching.window_ms, s.batching.max_queue) == (4, 5.0, 10)
    assert (s.limits.max_body_bytes, s.limits.max_image_bytes, s.limits.max_pixels) == (1 << 20, 1 << 19, 2_000_000)
    assert s.limits.url_allow_hosts == {"images.example.com", "127.0.0.1:8000"}
    assert (s.index_dir, s.default_index, s.visualize, s.request_timeout_s) == ("/tmp/x", "/tmp/y", False, 3.0)


def test_max_batch_takes_a_number_or_auto(capsys):
    assert settings_from_args(parse("--pipeline", "image_classification", "--max-batch", "auto")).batching.max_batch \
        == "auto"
    with pytest.raises(SystemExit):
        parse("--pipeline", "image_classification", "--max-batch", "fast")
    assert "expected a positive integer or 'auto'" in capsys.readouterr().err


def test_security_and_operations_options_reach_the_settings(tmp_path):
    from hpi.serving.auth import key_digest

    (tmp_path / "keys").write_text("client-key-0123456789\n", encoding="utf-8")
    (tmp_path / "admin").write_text(f"sha256:{key_digest('admin-key-0123456789')}\n", encoding="utf-8")
    s = settings_from_args(parse(
        "--pipeline", "PP-ShiTuV2", "--api-key-file", str(tmp_path / "keys"), "--admin-key-file",
        str(tmp_path / "admin"), "--allow-url-host", "*", "--allow-url-network", "10.1.2.0/24", "--url-timeout", "4",
        "--max-url-redirects", "1", "--max-indexes", "7", "--max-index-vectors", "500", "--max-index-disk-mb", "2",
        "--graceful-timeout", "9", "--no-metrics", "--no-access-log"))
    assert s.auth.role_of("client-key-0123456789") == "user" and s.auth.role_of("admin-key-0123456789") == "admin"
    assert s.limits.url_allow_hosts == {"*"} and s.limits.url_allow_networks == {"10.1.2.0/24"}
    assert (s.limits.url_timeout_s, s.limits.url_max_redirects) == (4.0, 1)
    assert (s.quotas.max_indexes, s.quotas.max_vectors_per_index, s.quotas.max_index_bytes) == (7, 500, 2 << 20)
    assert (s.drain_timeout_s, s.metrics, s.access_log) == (9.0, False, False)
    defaults = settings_from_args(parse("--pipeline", "image_classification"))
    assert not defaults.auth.enabled and defaults.metrics and defaults.access_log


def test_building_the_parser_needs_no_web_framework():
    code = "import sys, hpi.cli; hpi.cli.build_parser(); print('fastapi' in sys.modules, 'uvicorn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_serve_command_answers_the_seeds_client(toy_dir, tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"pipeline_name": "image_classification",
                                      "Pipeline": {"model": "ToyNet", "model_dir": str(toy_dir), "topk": 3}}))
    port = free_port()
    env = {**os.environ, "HPI_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "hpi.serving", "--pipeline", str(config), "--port", str(port),
                               "--device", "cpu", "--log-level", "warning"], cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "the server exited"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.3)
        assert health.json()["result"]["models"][0]["name"] == "ToyNet"
        (tmp_path / "demo.jpg").write_bytes(jpeg_bytes("rocket"))
        (tmp_path / "client.py").write_text(CLIENT.format(url=f"http://127.0.0.1:{port}"), encoding="utf-8")
        run = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout.count("'name': 'class_") == 3  # the pipeline's topk
        refused = httpx.post(f"http://127.0.0.1:{port}/image-classification",
                             json={"image": "http://169.254.169.254/latest"}, timeout=30).json()
        assert refused["errorCode"] == 403
        assert httpx.post(f"http://127.0.0.1:{port}/image-classification", json={"image": b64(jpeg_bytes())},
                          timeout=30).json()["errorCode"] == 0
    finally:
        server.terminate()
        server.wait(timeout=30)
