"""``POST /image-classification`` over loopback: the seeds' client, real weights, bad input, limits, SSRF."""

from __future__ import annotations

import html
import http.server
import io
import re
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

import hpi
from hpi.serving.app import create_app
from hpi.serving.batching import BatchingConfig, worker_for
from hpi.serving.common import ServeSettings
from hpi.serving.limits import ServingLimits
from tests.conftest import render_page
from tests.serving.conftest import IMAGES, LiveServer, b64, encoded, jpeg_bytes, png_declaring

pytestmark = pytest.mark.serving

SEED_DOC = Path("/work/shared/seeds/001_c3e11d94d78cc4ac.txt")

# The seeds' Python client (image classification), statement for statement; only the URL differs.
CLIENT = '''\
import base64
import requests

API_URL = "{url}/image-classification"  # the service
image_path = "./demo.jpg"
output_image_path = "./out.jpg"

# the local image, Base64-encoded
with open(image_path, "rb") as file:
    image_bytes = file.read()
    image_data = base64.b64encode(image_bytes).decode("ascii")

payload = {{"image": image_data}}  # Base64 file content or an image URL

# call the API
response = requests.post(API_URL, json=payload)

# use the response
assert response.status_code == 200
result = response.json()["result"]
with open(output_image_path, "wb") as file:
    file.write(base64.b64decode(result["image"]))
print(f"Output image saved at {{output_image_path}}")
print("\\nCategories:")
print(result["categories"])
'''


def seed_client_source() -> str | None:
    """The Python example exactly as the seed document prints it, when the seeds are at hand."""
    if not SEED_DOC.is_file():
        return None
    text = SEED_DOC.read_text(encoding="utf-8")
    match = re.search(r'<code class="language-python">(import base64\nimport requests\n.*?)</code>', text, re.S)
    return html.unescape(match.group(1)) if match else None


@pytest.fixture(scope="module")
def server(toy_model):
    with LiveServer(create_app(toy_model, ServeSettings(batching=BatchingConfig(max_batch=8, window_ms=5)))) as srv:
        yield srv


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def check_error(resp: httpx.Response, status: int, fragment: str) -> None:
    body = resp.json()
    assert resp.status_code == status, body
    assert body["errorCode"] == status and is_uuid(body["logId"]) and "result" not in body
    assert fragment in body["errorMsg"], body["errorMsg"]


# ----------------------------------------------------------------------------------------------- the seeds' client


@pytest.mark.parametrize("variant", ["written", "seed"])
def test_the_seeds_python_client_works_unchanged_but_for_the_url(server, tmp_path, variant):
    source = CLIENT.format(url=server.url) if variant == "written" else seed_client_source()
    if source is None:
        pytest.skip(f"{SEED_DOC} is not available here")
    if variant == "seed":
        assert source.count('API_URL = "http://localhost:8080/image-classification"') == 1
        source = source.replace("http://localhost:8080", server.url)
    (tmp_path / "demo.jpg").write_bytes(jpeg_bytes("chelsea"))
    (tmp_path / "client.py").write_text(source, encoding="utf-8")
    run = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Categories:" in run.stdout and "'name': 'class_" in run.stdout
    out = cv2.imread(str(tmp_path / "out.jpg"))
    assert out is not None and out.shape == (300, 451, 3)  # the visualisation, drawn on the input


# ----------------------------------------------------------------------------------------------- results


def test_results_equal_offline_predict(server, toy_model):
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    paths = [str(IMAGES / f"{n}.jpg") for n in names]
    offline = worker_for(toy_model, "ToyNet").run(lambda: list(toy_model.predict(paths, topk=3)))
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for name, ref in zip(names, offline):
            body = client.post("/image-classification", json={"image": b64(jpeg_bytes(name)), "topk": 3}).json()
            assert body["errorCode"] == 0 and body["errorMsg"] == "Success" and is_uuid(body["logId"])
            cats = body["result"]["categories"]
            assert [c["id"] for c in cats] == ref["class_ids"]
            assert [c["name"] for c in cats] == ref["label_names"]
            assert [c["score"] for c in cats] == pytest.approx(ref["scores"], abs=1e-6)


def test_topk_is_per_request_even_within_one_batch(server):
    def classify(k):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            payload = {"image": b64(jpeg_bytes("coffee"))} | ({"topk": k} if k else {})
            return client.post("/image-classification", json=payload).json()["result"]["categories"]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(classify, [1, 2, 3, 7, None, 1, 10, 4]))
    assert [len(c) for c in got] == [1, 2, 3, 7, 5, 1, 10, 4]  # None: the model's Topk (5)
    assert len({c[0]["id"] for c in got}) == 1


def test_real_weights_round_trip(orientation_dir, tmp_path):
    """PP-LCNet document orientation (trained ONNX weights): a page rotated by 180 degrees comes back as '180'."""
    model = hpi.create_model("PP-LCNet_x1_0_doc_ori", orientation_dir, device="cpu", cache_dir=tmp_path)
    page = render_page(0)
    with LiveServer(create_app(model)) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        for k, label in ((0, "0"), (2, "180"), (1, "270")):
            image = np.ascontiguousarray(np.rot90(page, k))
            body = client.post("/image-classification", json={"image": b64(encoded(image, ".png"))}).json()
            cats = body["result"]["categories"]
            assert cats[0]["name"] == label and cats[0]["score"] > 0.5
            assert len(cats) == 4  # the model's Topk
            health = client.get("/health").json()["result"]
    assert health["models"][0]["backend"] == model.backend and health["models"][0]["name"] == "PP-LCNet_x1_0_doc_ori"
    model.close()


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"image": b64(b"hello, world")}, 400, "not a readable image"),
        ({"image": "this is not base64!"}, 400, "neither an http(s) URL nor valid Base64"),
        ({"image": ""}, 400, "empty"),
        ({"image": b64(png_declaring(100_000, 100_000))}, 413, "100000 x 100000"),
        ({"image": b64(png_declaring(64, 64))}, 400, "not a readable image"),
        ({"image": b64(jpeg_bytes()[:300])}, 400, "not a readable image"),
        ({"image": b64(encoded(np.zeros((1, 30000, 3), np.uint8)))}, 413, "elongated"),
        ({"image": "file:///etc/passwd"}, 403, "disabled"),
        ({"imag": "x"}, 422, "image: Field required"),
        ({"image": 5}, 422, "image"),
        ({"image": b64(jpeg_bytes()), "topk": 0}, 422, "topk"),
        ({"image": b64(jpeg_bytes()), "topk": "many"}, 422, "topk"),
    ],
)
def test_bad_requests_get_a_4xx_in_the_protocol_shape(server, payload, status, fragment):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        check_error(client.post("/image-classification", json=payload), status, fragment)


def _pillow(image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda: encoded(np.zeros((1, 1, 3), np.uint8)), 200),
        (lambda: encoded(np.zeros((1, 100, 3), np.uint8)), 200),
        (lambda: encoded(np.full((50, 60), 90, np.uint8)), 200),
        (lambda: encoded(np.full((50, 60, 4), 90, np.uint8)), 200),
        (lambda: encoded(np.full((50, 60, 3), 40000, np.uint16)), 200),
        (lambda: _pillow(Image.new("RGB", (40, 30), "red"), "GIF"), 200),
        (lambda: _pillow(Image.new("CMYK", (40, 30)), "JPEG"), 200),
        (lambda: _pillow(Image.fromarray(np.zeros((30, 40), np.float32)), "TIFF"), 400),
        (lambda: _pillow(Image.new("RGB", (32, 32)), "ICO"), 400),
    ],
    ids=["1x1", "1x100", "gray", "rgba", "16-bit", "gif", "cmyk-jpeg", "float-tiff", "ico"],
)
def test_odd_but_valid_images_are_classified_and_undecodable_ones_are_400s(server, make, status):
    resp = httpx.post(f"{server.url}/image-classification", json={"image": b64(make())}, timeout=60)
    if status == 200:
        assert resp.status_code == 200 and resp.json()["result"]["categories"]
    else:
        check_error(resp, 400, "cannot be decoded")


def test_malformed_json_and_unknown_routes(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        check_error(client.post("/image-classification", content=b"{not json",
                                headers={"content-type": "application/json"}), 422, "invalid request body")
        check_error(client.post("/nope", json={}), 404, "Not Found")
        check_error(client.get("/image-classification"), 405, "Method Not Allowed")


def test_bad_images_among_good_ones_under_concurrency_never_cost_a_500_or_the_worker(server):
    good = b64(jpeg_bytes("rocket"))
    bad = [b64(b"garbage" * 10), b64(png_declaring(50_000, 50_000)), b64(png_declaring(32, 32)),
           b64(jpeg_bytes()[:200])]
    payloads = [{"image": good} if i % 2 == 0 else {"image": bad[i // 2 % len(bad)]} for i in range(48)]
    before = server.service.batcher.stats()

    def post(payload):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return client.post("/image-classification", json=payload)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, payloads))
    statuses = [r.status_code for r in responses]
    assert statuses[0::2] == [200] * 24
    assert all(s in (400, 413) for s in statuses[1::2])
    first = responses[0].json()["result"]["categories"]
    assert all(r.json()["result"]["categories"] == first for r in responses[0::2])
    after = server.service.batcher.stats()
    assert after["batches"] - before["batches"] < 24  # good requests shared engine calls
    assert after["largestBatch"] > 1
    assert len(server.service.batcher.worker.thread_ids) == 1  # one thread ever touched the engine
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/health").json()["result"]["status"] == "ok"
        assert client.post("/image-classification", json={"image": good}).status_code == 200


# ----------------------------------------------------------------------------------------------- limits


def test_body_limit_with_and_without_content_length(toy_model):
    settings = ServeSettings(limits=ServingLimits(max_body_bytes=64 * 1024))
    small = {"image": b64(encoded(np.full((32, 32, 3), 90, np.uint8), ".png"))}
    big = b'{"image": "' + b"A" * (200 * 1024) + b'"}'

    def chunks():
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    with LiveServer(create_app(toy_model, settings)) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        check_error(client.post("/image-classification", content=big, headers={"content-type": "application/json"}),
                    413, "request body too large")
        check_error(client.post("/image-classification", content=chunks(),
                                headers={"content-type": "application/json"}), 413, "request body too large")
        assert client.post("/image-classification", json=small).status_code == 200


def test_visualisation_can_be_turned_off(toy_model):
    with LiveServer(create_app(toy_model, ServeSettings(visualize=False))) as srv:
        body = httpx.post(f"{srv.url}/image-classification", json={"image": b64(jpeg_bytes())}, timeout=60).json()
    assert body["result"]["image"] is None and body["result"]["categories"]


# ----------------------------------------------------------------------------------------------- URLs (SSRF)


class ImageHost:
    """A loopback HTTP server with fixed routes: path -> (status, headers, body)."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        routes_ = routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                status, headers, body = routes_.get(self.path, (404, {}, b"missing"))
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ImageHost:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_urls_are_refused_by_default_and_fetched_from_allowed_hosts_only(toy_model):
    photo = jpeg_bytes("astronaut")
    routes = {
        "/cat.jpg": (200, {"Content-Type": "image/jpeg"}, photo),
        "/hop.jpg": (302, {"Location": "/cat.jpg"}, b""),
        "/escape.jpg": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
        "/huge.jpg": (200, {}, b"\xff" * (3 << 20)),
    }
    with ImageHost(routes) as host:
        url = f"{host.base}/cat.jpg"
        with LiveServer(create_app(toy_model)) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
            check_error(client.post("/image-classification", json={"image": url}), 403, "image URLs are disabled")

        allowed = ServeSettings(limits=ServingLimits(url_allow_hosts=frozenset({f"127.0.0.1:{host.port}"}),
                                                     url_allow_networks=frozenset({"127.0.0.1/32"}),
                                                     max_image_bytes=2 << 20))
        with LiveServer(create_app(toy_model, allowed)) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
            ok = client.post("/image-classification", json={"image": url}).json()
            direct = client.post("/image-classification", json={"image": b64(photo)}).json()
            assert ok["errorCode"] == 0 and ok["result"]["categories"] == direct["result"]["categories"]
            hop = client.post("/image-classification", json={"image": f"{host.base}/hop.jpg"}).json()
            assert hop["errorCode"] == 0
            check_error(client.post("/image-classification", json={"image": f"{host.base}/escape.jpg"}), 403,
                        "'169.254.169.254' is not on this server's URL allow-list")
            check_error(client.post("/image-classification", json={"image": f"http://localhost:{host.port}/cat.jpg"}),
                        403, "not on this server's URL allow-list")
            check_error(client.post("/image-classification", json={"image": f"http://127.0.0.1:{host.port + 1}/x"}),
                        403, "not on this server's URL allow-list")
            check_error(client.post("/image-classification",
                                    json={"image": f"http://user:pw@127.0.0.1:{host.port}/cat.jpg"}),
                        403, "credentials")
            check_error(client.post("/image-classification", json={"image": "ftp://127.0.0.1/cat.jpg"}), 403,
                        "only http and https")
            check_error(client.post("/image-classification", json={"image": f"{host.base}/missing.jpg"}), 422,
                        "HTTP 404")
            check_error(client.post("/image-classification", json={"image": f"{host.base}/huge.jpg"}), 413,
                        "more than the limit")


# ----------------------------------------------------------------------------------------------- health, schema


def test_health_names_the_backend_and_the_schema_is_served(server, toy_model):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        health = client.get("/health").json()
        schema = client.get("/openapi.json").json()
    assert health["errorCode"] == 0
    result = health["result"]
    assert result["status"] == "ok" and result["pipeline"] == "image_classification"
    assert result["models"] == [{
        "role": "classification", "name": "ToyNet", "backend": toy_model.backend, "device": "cpu",
        "precision": toy_model.choice.precision, "mode": toy_model.choice.mode, "weights": toy_model.weights,
    }]
    assert set(schema["paths"]) == {"/image-classification", "/health"}
    request_schema = schema["components"]["schemas"]["ClassifyRequest"]
    assert set(request_schema["properties"]) == {"image", "topk", "visualize"} and request_schema["required"] == ["image"]


class BatchCost:
    """A pipeline around a predictor whose calls cost more per image beyond batch 2, recording its engine threads."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.threads: set[int] = set()

    def predict(self, images, batch_size=1, topk=None):
        self.threads.add(threading.get_ident())
        time.sleep(0.004 * max(1, len(images) - 1))  # batch 2 gets the most images per second
        return self.predictor.predict(images, batch_size=batch_size, topk=topk)


def test_max_batch_auto_is_measured_on_the_engine_thread_at_start(toy_model):
    runner = BatchCost(toy_model)
    app = create_app(runner, ServeSettings(batching=BatchingConfig(max_batch="auto")))
    measured_on = set(runner.threads)
    assert len(measured_on) == 1
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        assert client.post("/image-classification", json={"image": b64(jpeg_bytes())}).json()["errorCode"] == 0
        assert client.get("/health").json()["result"]["batching"]["ToyNet"]["maxBatch"] == 2
    assert runner.threads == measured_on  # served on the thread that measured


# ----------------------------------------------------------------------------------------------- failures, overload


class Flaky:
    """A pipeline around a predictor that is slow, or fails on 77-pixel-high images, on demand."""

    def __init__(self, predictor, delay: float = 0.0) -> None:
        self.predictor = predictor
        self.delay = delay

    def predict(self, images, batch_size=1, topk=None):
        time.sleep(self.delay)
        if any(cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR).shape[0] == 77 for image in images):
            raise RuntimeError("engine exploded")
        return self.predictor.predict(images, batch_size=batch_size, topk=topk)


def test_an_engine_failure_is_a_500_in_the_protocol_shape_and_the_server_goes_on(toy_model):
    cursed = {"image": b64(encoded(np.full((77, 90, 3), 128, np.uint8), ".png"))}
    with LiveServer(create_app(Flaky(toy_model))) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        check_error(client.post("/image-classification", json=cursed), 500, "internal error (RuntimeError)")
        assert client.post("/image-classification", json={"image": b64(jpeg_bytes())}).json()["errorCode"] == 0
        assert client.get("/health").json()["result"]["status"] == "ok"


def test_a_request_that_waits_too_long_gets_504(toy_model):
    settings = ServeSettings(request_timeout_s=0.3)
    with LiveServer(create_app(Flaky(toy_model, delay=1.0), settings)) as srv:
        check_error(httpx.post(f"{srv.url}/image-classification", json={"image": b64(jpeg_bytes())}, timeout=60),
                    504, "timed out")


def test_a_full_queue_answers_503_with_retry_after(toy_model):
    settings = ServeSettings(batching=BatchingConfig(max_batch=1, window_ms=0, max_queue=1))
    payload = {"image": b64(jpeg_bytes())}
    with LiveServer(create_app(Flaky(toy_model, delay=0.5), settings)) as srv:
        def post(_):
            return httpx.post(f"{srv.url}/image-classification", json=payload, timeout=60)

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(post, range(6)))
    busy = [r for r in responses if r.status_code == 503]
    assert busy and all(r.headers["retry-after"] == "1" for r in busy)
    check_error(busy[0], 503, "retry later")
    assert any(r.status_code == 200 for r in responses)
