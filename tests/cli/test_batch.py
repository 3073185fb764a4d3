"""hpi/cli/batch.py: ``hpi batch`` on remote inputs (a local S3-compatible server, unreachable or unconfigured
stores) and its stop on SIGTERM. The Ray-backed runs start a local cluster on 127.0.0.1 and are marked slow."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpi.cli import main
from hpi.selection.measure import SAMPLE_IMAGES
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
           "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    # No credentials file either (HOME stays: Ray keeps its token under it, and a cluster started earlier in this
    # process would not match a new one's)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


def batch(toy_dir, tmp_path, source: str, *extra: str) -> int:
    return main(["batch", "--model", "ToyNet", "--model-dir", str(toy_dir), "--input", source,
                 "--output", str(tmp_path / "out.parquet"), "--workers", "1", "--cache-dir", str(tmp_path / "cache"),
                 *extra])


def test_an_unsupported_scheme_fails_at_once_naming_it(no_aws, toy_dir, tmp_path, capsys):
    started = time.monotonic()
    assert batch(toy_dir, tmp_path, "gs://bucket/images/") == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 10
    assert "gs:// inputs are not supported" in err and "s3://" in err and "Traceback" not in err


def test_s3_without_credentials_says_what_to_configure(no_aws, toy_dir, tmp_path, capsys):
    started = time.monotonic()
    assert batch(toy_dir, tmp_path, "s3://bucket/images/") == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 10
    assert "no S3 credentials configured" in err and "AWS_ACCESS_KEY_ID" in err and "AWS_ENDPOINT_URL" in err


def test_an_unreachable_s3_endpoint_fails_within_ten_seconds(no_aws, monkeypatch, toy_dir, tmp_path, capsys):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    assert batch(toy_dir, tmp_path, "s3://bucket/images/") == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 10
    assert f"the S3 endpoint http://127.0.0.1:{port}" in err and "cannot list it" in err
    assert "Traceback" not in err and not (tmp_path / "out.parquet").exists()


@pytest.fixture
def s3_photos(no_aws, monkeypatch):
    """A moto S3 server on 127.0.0.1 with the sample photos under s3://photos/cats/; the AWS variables set."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(name, value)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="photos")
        names = sorted(p.name for p in SAMPLE_IMAGES.glob("*.jpg"))
        for name in names:
            client.put_object(Bucket="photos", Key=f"cats/{name}", Body=(SAMPLE_IMAGES / name).read_bytes())
        client.put_object(Bucket="photos", Key="cats/notes.txt", Body=b"not an image")
        yield names
    finally:
        server.stop()


@pytest.mark.slow
def test_batch_reads_images_from_a_local_s3_server(s3_photos, toy_dir, tmp_path, capsys):
    import pyarrow.parquet as pq

    import hpi

    assert batch(toy_dir, tmp_path, "s3://photos/cats/") == 0
    assert f"{len(s3_photos)} image(s)" in capsys.readouterr().out
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [Path(r["input_path"]).name for r in rows] == s3_photos
    with hpi.create_model("ToyNet", toy_dir, device="cpu", cache_dir=tmp_path / "cache") as model:
        want = list(model.predict(str(SAMPLE_IMAGES / s3_photos[0])))[0]
    assert rows[0]["error"] is None and rows[0]["class_ids"] == list(want["class_ids"])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc")
def test_sigterm_stops_a_batch_after_the_batch_in_hand(toy_dir, tmp_path):
    import psutil

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(400):
        shutil.copy(SAMPLE_IMAGES / "chelsea.jpg", photos / f"{i:04d}.jpg")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "batch.log"
    with open(log, "wb") as out:
        job = subprocess.Popen([sys.executable, "-m", "hpi", "batch", "--model", "ToyNet", "--model-dir",
                                str(toy_dir), "--input", str(photos), "--output", str(tmp_path / "out.parquet"),
                                "--workers", "1", "--batch-size", "2", "--cache-dir", str(tmp_path / "cache")],
                               stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 300
            while "/400" not in log.read_text(errors="replace") and "img" not in log.read_text(errors="replace"):
                assert job.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "the job did not start classifying"
                time.sleep(0.2)
            children = psutil.Process(job.pid).children(recursive=True)
            job.send_signal(signal.SIGTERM)
            code = job.wait(120)
        finally:
            if job.poll() is None:
                job.kill()
    text = log.read_text(errors="replace")
    assert code == 143, text[-3000:]
    assert text.count("hpi batch stopped on SIGTERM") == 1 and "no output written" in text
    assert "Traceback" not in text and not (tmp_path / "out.parquet").exists()
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {[p.pid for p in alive]}"
