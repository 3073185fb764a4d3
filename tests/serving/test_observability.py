"""Operations: Prometheus metrics present and counting, the access log carrying each response's logId, and a
graceful shutdown that answers every accepted request."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from hpi.serving.app import create_app
from hpi.serving.auth import AuthConfig, key_digest
from hpi.serving.batching import BatchingConfig
from hpi.serving.common import ServeSettings, new_log_id
from tests.serving.conftest import LiveServer, b64, jpeg_bytes, png_declaring
from tests.serving.test_app_classification import Flaky, is_uuid

pytestmark = pytest.mark.serving

PAYLOAD = {"image": b64(jpeg_bytes()), "visualize": False}


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None when it is absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def test_log_ids_are_version_4_uuids():
    ids = {new_log_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(is_uuid(i) and i[14] == "4" for i in ids)


def test_metrics_are_present_and_count(toy_model):
    settings = ServeSettings(batching=BatchingConfig(max_batch=4, window_ms=20))
    with LiveServer(create_app(toy_model, settings)) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        first = client.get("/metrics")
        assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain")
        for family in ("hpi_requests_total", "hpi_request_duration_seconds", "hpi_batch_size", "hpi_queue_depth",
                       "hpi_engine_busy_seconds_total", "hpi_requests_in_flight", "hpi_rejected_requests_total"):
            assert f"# TYPE {family.removesuffix('_total')}" in first.text, family

        def post(payload):
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                return c.post("/image-classification", json=payload).status_code

        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(post, [PAYLOAD] * 6 + [{"image": b64(png_declaring(90_000, 90_000))}] * 2))
        assert codes == [200] * 6 + [413] * 2
        client.get("/nowhere")
        text = client.get("/metrics").text

    endpoint = "/image-classification"
    assert sample(text, "hpi_requests_total", endpoint=endpoint, method="POST", status="200") == 6
    assert sample(text, "hpi_requests_total", endpoint=endpoint, method="POST", status="413") == 2
    assert sample(text, "hpi_requests_total", endpoint="other", method="GET", status="404") == 1
    assert sample(text, "hpi_requests_total", endpoint="/metrics", method="GET", status="200") == 1
    assert sample(text, "hpi_request_duration_seconds_count", endpoint=endpoint) == 8
    assert sample(text, "hpi_request_duration_seconds_sum", endpoint=endpoint) > 0
    model = "ToyNet"
    batches = sample(text, "hpi_batches_total", model=model)
    assert 1 <= batches < 6  # six requests shared engine calls
    assert sample(text, "hpi_batch_size_count", model=model) == batches
    assert sample(text, "hpi_batch_size_sum", model=model) == 6
    assert sample(text, "hpi_batch_size_bucket", model=model, le="4.0") == batches
    assert sample(text, "hpi_batch_size_bucket", model=model, le="+Inf") == batches
    assert sample(text, "hpi_engine_busy_seconds_total", model=model) > 0
    assert sample(text, "hpi_queue_depth", model=model) == 0
    assert sample(text, "hpi_requests_in_flight") == 1  # the scrape itself


def test_metrics_can_be_turned_off(toy_model):
    with LiveServer(create_app(toy_model, ServeSettings(metrics=False))) as srv:
        assert httpx.get(f"{srv.url}/metrics", timeout=30).status_code == 404


def test_the_access_log_carries_the_log_id_of_every_response(toy_model, caplog):
    key = "access-log-key-0123456789"
    settings = ServeSettings(auth=AuthConfig(api_key_digests=frozenset({key_digest(key)})))
    with caplog.at_level(logging.INFO, logger="hpi.serving.access"), \
            LiveServer(create_app(toy_model, settings)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        responses = [c.post("/image-classification", json=PAYLOAD, headers={"X-API-Key": key}),
                     c.post("/image-classification", json=PAYLOAD),  # 401 from the auth layer
                     c.post("/image-classification", json={"image": "!"}, headers={"X-API-Key": key}),
                     c.get("/health")]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "hpi.serving.access"]
    assert [line["status"] for line in lines] == [200, 401, 400, 200]
    assert [line["logId"] for line in lines] == [r.json()["logId"] for r in responses]
    assert [line["role"] for line in lines] == ["user", None, "user", None]
    first = lines[0]
    assert first["method"] == "POST" and first["path"] == "/image-classification" and first["client"] == "127.0.0.1"
    assert first["ms"] > 0 and first["bytes"] == len(responses[0].content)
    assert key not in caplog.text


def test_graceful_shutdown_answers_every_accepted_request(toy_model):
    """Requests accepted before the stop signal are all answered (200), even those still queued behind a slow
    engine; connections after it are refused rather than dropped half-way."""
    settings = ServeSettings(batching=BatchingConfig(max_batch=2, window_ms=0, max_queue=64))
    server = LiveServer(create_app(Flaky(toy_model, delay=0.3), settings))
    count = 12
    with server:
        service = server.service
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(httpx.post, f"{server.url}/image-classification", json=PAYLOAD, timeout=120)
                       for _ in range(count)]
            deadline = time.monotonic() + 60
            while service.batcher.raw_stats().requests < count:  # every request is queued or running
                assert time.monotonic() < deadline, "the requests did not all arrive"
                time.sleep(0.01)
            assert service.batcher.queue_depth > 0  # some are still waiting when the stop comes
            stopper = threading.Thread(target=server.__exit__, args=(None, None, None))
            stopper.start()  # what SIGTERM does: should_exit, then uvicorn's graceful shutdown
            responses = [f.result() for f in futures]
            stopper.join(timeout=60)
    assert [r.status_code for r in responses] == [200] * count
    assert all(r.json()["result"]["categories"] for r in responses)
    assert not server.thread.is_alive()
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{server.url}/image-classification", json=PAYLOAD, timeout=5)
