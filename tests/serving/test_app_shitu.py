"""PP-ShiTuV2 over loopback: the seeds' client flow, persistence across restarts, concurrent add/remove, errors.

The pipeline runs seeded zoo builds of PP-ShiTuV2_det and PP-ShiTuV2_rec (scores mean nothing; the protocol,
persistence and concurrency are what is tested).
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from hpi.serving.app import create_app
from hpi.serving.common import ServeSettings
from hpi.serving.limits import ServingLimits
from tests.serving.conftest import LiveServer, b64, encoded, jpeg_bytes, png_declaring

pytestmark = [pytest.mark.serving, pytest.mark.slow]

# The seeds' PP-ShiTuV2 Python client, statement for statement (the seed prints it with its line breaks lost);
# only the base URL differs.
SHITU_CLIENT = '''\
import base64
import pprint
import sys

import requests

API_BASE_URL = "{url}"

base_image_label_pairs = [
    {{"image": "./demo0.jpg", "label": "Rabbit"}},
    {{"image": "./demo1.jpg", "label": "Rabbit"}},
    {{"image": "./demo2.jpg", "label": "Dog"}},
]
image_label_pairs_to_add = [
    {{"image": "./demo3.jpg", "label": "Dog"}},
]
ids_to_remove = [1]
infer_image_path = "./demo4.jpg"
output_image_path = "./out.jpg"

for pair in base_image_label_pairs:
    with open(pair["image"], "rb") as file:
        image_bytes = file.read()
        image_data = base64.b64encode(image_bytes).decode("ascii")
    pair["image"] = image_data

payload = {{"imageLabelPairs": base_image_label_pairs}}
resp_index_build = requests.post(f"{{API_BASE_URL}}/shitu-index-build", json=payload)
if resp_index_build.status_code != 200:
    print(f"Request to shitu-index-build failed with status code {{resp_index_build}}.")
    pprint.pp(resp_index_build.json())
    sys.exit(1)
result_index_build = resp_index_build.json()["result"]
print(f"Number of images indexed: {{len(result_index_build['idMap'])}}")

for pair in image_label_pairs_to_add:
    with open(pair["image"], "rb") as file:
        image_bytes = file.read()
        image_data = base64.b64encode(image_bytes).decode("ascii")
    pair["image"] = image_data

payload = {{"imageLabelPairs": image_label_pairs_to_add, "indexKey": result_index_build["indexKey"]}}
resp_index_add = requests.post(f"{{API_BASE_URL}}/shitu-index-add", json=payload)
if resp_index_add.status_code != 200:
    print(f"Request to shitu-index-add failed with status code {{resp_index_add}}.")
    pprint.pp(resp_index_add.json())
    sys.exit(1)
result_index_add = resp_index_add.json()["result"]
print(f"Number of images indexed: {{len(result_index_add['idMap'])}}")

payload = {{"ids": ids_to_remove, "indexKey": result_index_build["indexKey"]}}
resp_index_remove = requests.post(f"{{API_BASE_URL}}/shitu-index-remove", json=payload)
if resp_index_remove.status_code != 200:
    print(f"Request to shitu-index-remove failed with status code {{resp_index_remove}}.")
    pprint.pp(resp_index_remove.json())
    sys.exit(1)
result_index_remove = resp_index_remove.json()["result"]
print(f"Number of images indexed: {{len(result_index_remove['idMap'])}}")

with open(infer_image_path, "rb") as file:
    image_bytes = file.read()
    image_data = base64.b64encode(image_bytes).decode("ascii")

payload = {{"image": image_data, "indexKey": result_index_build["indexKey"]}}
resp_infer = requests.post(f"{{API_BASE_URL}}/shitu-infer", json=payload)
if resp_infer.status_code != 200:
    print(f"Request to shitu-infer failed with status code {{resp_infer}}.")
    pprint.pp(resp_infer.json())
    sys.exit(1)
result_infer = resp_infer.json()["result"]

with open(output_image_path, "wb") as file:
    file.write(base64.b64decode(result_infer["image"]))
print(f"Output image saved at {{output_image_path}}")
print("\\nDetected objects:")
pprint.pp(result_infer["detectedObjects"])
'''


@pytest.fixture(scope="module")
def shitu_pipeline(tmp_path_factory):
    """PP-ShiTuV2 from seeded zoo builds written to a temporary directory (not the user's model store)."""
    import hpi
    from hpi import zoo

    root = tmp_path_factory.mktemp("shitu_models")
    dirs = {name: str(zoo.build(name, root / name)) for name in ("PP-ShiTuV2_det", "PP-ShiTuV2_rec")}
    config = {
        "pipeline_name": "PP-ShiTuV2",
        "SubModules": {
            "Detection": {"model_name": "PP-ShiTuV2_det", "model_dir": dirs["PP-ShiTuV2_det"]},
            "Recognition": {"model_name": "PP-ShiTuV2_rec", "model_dir": dirs["PP-ShiTuV2_rec"]},
        },
    }
    pipeline = hpi.create_pipeline("PP-ShiTuV2", config=config, device="cpu",
                                   cache_dir=tmp_path_factory.mktemp("shitu_cache"))
    yield pipeline
    pipeline.close()


def tile(seed: int, size: int = 96) -> bytes:
    """A small distinct gallery image (PNG), cheap to embed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return encoded(np.kron(base, np.ones((size // 6, size // 6, 1), np.uint8)), ".png")


def pairs(seeds, label="item"):
    return [{"image": b64(tile(s)), "label": f"{label}-{s}"} for s in seeds]


def test_the_seeds_shitu_client_flow(shitu_pipeline, tmp_path):
    for i, name in enumerate(["astronaut", "chelsea", "coffee", "rocket", "coffee"]):
        (tmp_path / f"demo{i}.jpg").write_bytes(jpeg_bytes(name))
    with LiveServer(create_app(shitu_pipeline, ServeSettings(index_dir=str(tmp_path / "indexes")))) as srv:
        (tmp_path / "client.py").write_text(SHITU_CLIENT.format(url=srv.url), encoding="utf-8")
        run = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
        health = httpx.get(f"{srv.url}/health", timeout=30).json()["result"]
    assert run.returncode == 0, run.stdout + run.stderr
    counts = [line for line in run.stdout.splitlines() if line.startswith("Number of images indexed")]
    assert counts == ["Number of images indexed: 3", "Number of images indexed: 4", "Number of images indexed: 3"]
    assert "Detected objects:" in run.stdout and "'recResults'" in run.stdout
    assert (tmp_path / "out.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert [m["role"] for m in health["models"]] == ["detection", "recognition"]
    assert {m["name"] for m in health["models"]} == {"PP-ShiTuV2_det", "PP-ShiTuV2_rec"}
    assert all(m["backend"] and m["device"] == "cpu" for m in health["models"])


def test_infer_finds_a_gallery_image_and_draws_it(shitu_pipeline, tmp_path):
    with LiveServer(create_app(shitu_pipeline, ServeSettings(index_dir=str(tmp_path)))) as srv, \
            httpx.Client(base_url=srv.url, timeout=120) as client:
        gallery = [{"image": b64(jpeg_bytes(n)), "label": n} for n in ("coffee", "rocket")]
        key = client.post("/shitu-index-build", json={"imageLabelPairs": gallery}).json()["result"]["indexKey"]
        body = client.post("/shitu-infer", json={"image": b64(jpeg_bytes("coffee")), "indexKey": key}).json()
    assert body["errorCode"] == 0
    objects = body["result"]["detectedObjects"]
    whole = [o for o in objects if o["bbox"] == [0.0, 0.0, 600.0, 400.0]]
    assert whole and whole[0]["recResults"][0] == {"label": "coffee", "score": pytest.approx(1.0, abs=1e-4)}
    assert all(len(o["bbox"]) == 4 and 0 <= o["score"] <= 1 for o in objects)
    assert body["result"]["image"]


def test_indexes_survive_a_restart(shitu_pipeline, tmp_path):
    settings = ServeSettings(index_dir=str(tmp_path))
    with LiveServer(create_app(shitu_pipeline, settings)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        built = c.post("/shitu-index-build", json={"imageLabelPairs": pairs(range(4))}).json()["result"]
        removed = c.post("/shitu-index-remove", json={"ids": [2], "indexKey": built["indexKey"]}).json()["result"]
    key = built["indexKey"]
    assert built["idMap"] == {str(i): f"item-{i}" for i in range(4)}
    assert (tmp_path / key / "meta.json").is_file()
    with LiveServer(create_app(shitu_pipeline, settings)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        added = c.post("/shitu-index-add", json={"imageLabelPairs": pairs([9]), "indexKey": key}).json()
    assert added["errorCode"] == 0
    assert added["result"]["idMap"] == {**removed["idMap"], "4": "item-9"}  # ids are never reused


def test_concurrent_adds_and_removes_on_one_index_lose_nothing(shitu_pipeline, tmp_path):
    from hpi.retrieval import FeatureIndex

    with LiveServer(create_app(shitu_pipeline, ServeSettings(index_dir=str(tmp_path)))) as srv:
        with httpx.Client(base_url=srv.url, timeout=120) as client:
            key = client.post("/shitu-index-build",
                              json={"imageLabelPairs": pairs(range(12), "base")}).json()["result"]["indexKey"]

        def add(i):
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                return c.post("/shitu-index-add", json={"imageLabelPairs": pairs([100 + i], "new"), "indexKey": key})

        def remove(ids):
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                return c.post("/shitu-index-remove", json={"ids": ids, "indexKey": key})

        with ThreadPoolExecutor(8) as pool:
            adds = [pool.submit(add, i) for i in range(8)]
            removes = [pool.submit(remove, [i, i + 6]) for i in range(6)]
            responses = [f.result() for f in adds + removes]
        assert [r.status_code for r in responses] == [200] * 14
        final = httpx.get(f"{srv.url}/health", timeout=30)  # the server is still fine
        assert final.status_code == 200
        last = srv.service.store.get(key).id_map
    assert sorted(last.values()) == sorted(f"new-{100 + i}" for i in range(8))
    assert sorted(last) == list(range(12, 20))  # every add got its own new id
    assert FeatureIndex.load(tmp_path / key).id_map == last  # what is on disk is what was answered


def test_index_errors(shitu_pipeline, tmp_path):
    settings = ServeSettings(index_dir=str(tmp_path), limits=ServingLimits(max_images_per_request=4))
    with LiveServer(create_app(shitu_pipeline, settings)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        key = c.post("/shitu-index-build", json={"imageLabelPairs": pairs(range(3))}).json()["result"]["indexKey"]

        def check(resp, status, fragment):
            body = resp.json()
            assert resp.status_code == status and body["errorCode"] == status, body
            assert fragment in body["errorMsg"], body["errorMsg"]

        check(c.post("/shitu-index-add", json={"imageLabelPairs": pairs([7]), "indexKey": "f" * 32}), 404,
              "no index with indexKey")
        check(c.post("/shitu-infer", json={"image": b64(tile(1)), "indexKey": "../" + key}), 404, "not an index key")
        check(c.post("/shitu-infer", json={"image": b64(tile(1))}), 404, "no indexKey given")
        check(c.post("/shitu-index-remove", json={"ids": [0, 42], "indexKey": key}), 400, "ids not in the index: 42")
        check(c.post("/shitu-index-build", json={"imageLabelPairs": pairs(range(5))}), 413, "more than the limit of 4")
        bad = pairs([5]) + [{"image": b64(png_declaring(80_000, 80_000)), "label": "bomb"}]
        check(c.post("/shitu-index-add", json={"imageLabelPairs": bad, "indexKey": key}), 413,
              "imageLabelPairs[1].image")
        garbage = pairs([5]) + [{"image": b64(b"nope"), "label": "x"}]
        check(c.post("/shitu-index-add", json={"imageLabelPairs": garbage, "indexKey": key}), 400,
              "imageLabelPairs[1].image: not a readable image")
        check(c.post("/shitu-index-build", json={"imageLabelPairs": []}), 422, "imageLabelPairs")
        check(c.post("/shitu-index-build", json={"imageLabelPairs": [{"image": b64(tile(1)), "label": ""}]}), 422,
              "label")
        unchanged = c.post("/shitu-index-remove", json={"ids": [0], "indexKey": key}).json()["result"]["idMap"]
    assert unchanged == {"1": "item-1", "2": "item-2"}  # failed requests changed nothing


def test_openapi_lists_the_shitu_endpoints(shitu_pipeline, tmp_path):
    app = create_app(shitu_pipeline, ServeSettings(index_dir=str(tmp_path)))
    paths = set(app.openapi()["paths"])
    assert paths == {"/shitu-index-build", "/shitu-index-add", "/shitu-index-remove", "/shitu-infer", "/health"}


def test_default_index_from_the_command_line(shitu_pipeline, tmp_path):
    from hpi.retrieval import FeatureIndex
    from hpi.serving.batching import worker_for

    images = [np.full((64, 64, 3), v, np.uint8) for v in (10, 200)]
    features = worker_for(shitu_pipeline, "PP-ShiTuV2").run(shitu_pipeline.embed_images, images)
    FeatureIndex(features, ["dark", "light"], index_type="Flat").save(tmp_path / "default")
    settings = ServeSettings(index_dir=str(tmp_path / "api"), default_index=str(tmp_path / "default"))
    with LiveServer(create_app(shitu_pipeline, settings)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        added = c.post("/shitu-index-add", json={"imageLabelPairs": pairs([3])}).json()
    assert added["result"]["idMap"] == {"0": "dark", "1": "light", "2": "item-3"}
    assert FeatureIndex.load(Path(tmp_path / "default")).id_map == {0: "dark", 1: "light", 2: "item-3"}


def test_index_changes_need_the_admin_key_and_searches_the_api_key(shitu_pipeline, tmp_path):
    from hpi.serving.auth import AuthConfig, key_digest

    user, admin = "shitu-user-key-0123456789", "shitu-admin-key-0123456789"
    settings = ServeSettings(index_dir=str(tmp_path), auth=AuthConfig(
        api_key_digests=frozenset({key_digest(user)}), admin_key_digests=frozenset({key_digest(admin)})))
    as_user, as_admin = {"Authorization": f"Bearer {user}"}, {"X-API-Key": admin}
    with LiveServer(create_app(shitu_pipeline, settings)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        build = {"imageLabelPairs": pairs(range(2))}
        for headers, status in (({}, 401), ({"X-API-Key": "wrong-key-0123456789"}, 401), (as_user, 403)):
            resp = c.post("/shitu-index-build", json=build, headers=headers)
            assert resp.status_code == status and resp.json()["errorCode"] == status, resp.text
        assert "needs an admin key" in c.post("/shitu-index-build", json=build, headers=as_user).json()["errorMsg"]
        key = c.post("/shitu-index-build", json=build, headers=as_admin).json()["result"]["indexKey"]
        add = {"imageLabelPairs": pairs([5]), "indexKey": key}
        remove = {"ids": [0], "indexKey": key}
        infer = {"image": b64(tile(1)), "indexKey": key, "visualize": False}
        for path, body in (("/shitu-index-add", add), ("/shitu-index-remove", remove)):
            assert c.post(path, json=body).status_code == 401
            assert c.post(path, json=body, headers=as_user).status_code == 403
        assert c.post("/shitu-infer", json=infer).status_code == 401
        for headers in (as_user, as_admin):  # searching needs any key
            body = c.post("/shitu-infer", json=infer, headers=headers).json()
            assert body["errorCode"] == 0 and body["result"]["image"] is None
        assert c.post("/shitu-index-add", json=add, headers=as_admin).json()["result"]["idMap"] == {
            "0": "item-0", "1": "item-1", "2": "item-5"}
        assert c.get("/health").json()["result"]["models"] is None


def test_quota_refusals_through_the_api_leave_the_disk_as_before(shitu_pipeline, tmp_path):
    from hpi.serving.indexes import IndexQuotas
    from tests.serving.test_indexes import disk_state

    settings = ServeSettings(index_dir=str(tmp_path), quotas=IndexQuotas(max_indexes=1, max_vectors_per_index=3))
    with LiveServer(create_app(shitu_pipeline, settings)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        key = c.post("/shitu-index-build", json={"imageLabelPairs": pairs(range(2))}).json()["result"]["indexKey"]
        before = disk_state(tmp_path)
        embedded, real_embed = [], srv.service._embed
        srv.service._embed = lambda images: embedded.append(len(images)) or real_embed(images)

        def check(resp, fragment):
            body = resp.json()
            assert resp.status_code == 403 and body["errorCode"] == 403, body
            assert fragment in body["errorMsg"], body["errorMsg"]

        id_map = srv.service.store.get(key).id_map
        check(c.post("/shitu-index-build", json={"imageLabelPairs": pairs(range(2))}), "quota max_indexes")
        check(c.post("/shitu-index-add", json={"imageLabelPairs": pairs([7, 8]), "indexKey": key}),
              "quota max_vectors_per_index")
        assert disk_state(tmp_path) == before
        assert embedded == [] and srv.service.store.get(key).id_map == id_map  # refused before any embedding
        ok = c.post("/shitu-index-add", json={"imageLabelPairs": pairs([7]), "indexKey": key}).json()
    assert ok["result"]["idMap"] == {"0": "item-0", "1": "item-1", "2": "item-7"}


def test_max_batch_auto_is_refused_for_shitu():
    from hpi.errors import InvalidConfigError
    from hpi.serving.batching import BatchingConfig
    from hpi.serving.shitu import ShiTuService

    with pytest.raises(InvalidConfigError, match="image classification only"):
        ShiTuService(object(), ServeSettings(batching=BatchingConfig(max_batch="auto")))
