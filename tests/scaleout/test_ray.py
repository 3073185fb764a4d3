"""Ray: the map_batches class and ``hpi batch`` against predict(), Serve replicas against ``hpi serve``, and
PP-ShiTuV2 index changes seen by every replica. One local cluster (2 CPUs, no dashboard, small object store) on
127.0.0.1 for the whole module, shut down at its end."""

from __future__ import annotations

import base64
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import hpi
from hpi.scaleout.ray_batch import HpiClassifier, expand_input, run_batch
from hpi.scaleout.ray_serve import REPLICA_HEADER, SharedIndexStore
from hpi.selection.measure import SAMPLE_IMAGES
from hpi.serving.common import ServeSettings
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

OBJECT_STORE_BYTES = 80 << 20  # Ray's minimum is 75 MiB


# ------------------------------------------------------------------ commands in their own processes (first: before
# this module's in-process cluster starts, so that two clusters do not share the cores)


def test_serve_engine_ray_stops_cleanly_on_sigterm_under_load(toy_dir, tmp_path):
    """``hpi serve --engine ray`` on its own local cluster: Serve's and hpi's health paths answer; SIGTERM during
    load answers the request in flight, refuses new connections, exits 0 and leaves no Ray process behind."""
    import httpx

    from tests.cli.test_serve_stop import stop_under_load
    from tests.serving.conftest import ServerProcess

    server = ServerProcess(toy_dir, tmp_path, "--engine", "ray", "--replicas", "1", "--no-access-log",
                           env={"TMPDIR": "/tmp"})
    try:
        server.wait_ready(300)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/-/healthz").status_code == 200  # Serve's proxy
            assert client.get("/-/healthy").text == "success"  # older Serve's path, answered by the replica
            assert client.get("/-/routes").json() == {"/": "hpi"}
            assert client.get("/health").json()["result"]["status"] == "ok"
        stop_under_load(server, children=3)  # GCS, raylet, agents, the replica...
    finally:
        server.stop()


@pytest.fixture(scope="module")
def head_node():
    """A Ray cluster started as a user would (``ray start --head --block``) on 127.0.0.1; its GCS address."""
    import os
    import signal as signals
    import tempfile

    import psutil

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="hpi-ray-", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(["ray", "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                             f"--object-store-memory={OBJECT_STORE_BYTES}", f"--temp-dir={tmp}"],
                            env=env, stdout=open(Path(tmp) / "head.log", "wb"),  # noqa: SIM115 - the child's
                            stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (Path(tmp) / "head.log").read_text(errors="replace"):
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(0.5)
        yield address
    finally:
        procs = psutil.Process(head.pid).children(recursive=True) if head.poll() is None else []
        head.send_signal(signals.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
        _, alive = psutil.wait_procs(procs, timeout=30)
        for proc in alive:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def test_batch_and_serve_join_a_cluster_with_address(head_node, toy_dir, photo_dir, tmp_path):
    """``hpi batch --address`` and ``hpi serve --engine ray --address`` run on a cluster they did not start."""
    import os

    import httpx
    import pyarrow.parquet as pq

    from tests.serving.conftest import ServerProcess

    # ray start turns on token authentication; a client says it will use it (the token is in ~/.ray/auth_token).
    auth = {"RAY_AUTH_MODE": "token"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **auth}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, "-m", "hpi", "-v", "batch", "--model", "ToyNet", "--model-dir", str(toy_dir),
                          "--input", str(photo_dir), "--output", str(tmp_path / "out.parquet"), "--workers", "1",
                          "--cache-dir", str(tmp_path / "cache"), "--address", head_node],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 1, run.stderr[-3000:]  # the corrupt photo
    assert f"joined the Ray cluster at {head_node}" in run.stderr
    assert len(pq.read_table(tmp_path / "out.parquet")) == 5

    server = ServerProcess(toy_dir, tmp_path, "--engine", "ray", "--replicas", "1", "--address", head_node,
                           "--no-access-log", env={"TMPDIR": "/tmp", **auth})
    try:
        server.wait_ready(300)
        assert httpx.get(f"{server.url}/health", timeout=30).json()["result"]["status"] == "ok"
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(120) == 0
        assert f"joined the Ray cluster at {head_node}" in server.output()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ray_cluster():
    import ray  # a test dependency (the ray extra): missing is an error, not a skip

    from hpi.scaleout.ray_cluster import connect, disconnect

    connection = connect(num_cpus=2, object_store_bytes=OBJECT_STORE_BYTES)
    try:
        assert connection.address == "local"
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
    except AssertionError:
        disconnect(connection)
        raise
    yield connection
    try:
        from ray import serve

        serve.shutdown()
    finally:
        disconnect(connection)
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """The built-in photos plus one corrupt file."""
    out = tmp_path_factory.mktemp("photos")
    for path in SAMPLE_IMAGES.glob("*.jpg"):
        shutil.copy(path, out / path.name)
    (out / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return out


def _predict(toy_dir, cache, paths):
    with hpi.create_model("ToyNet", toy_dir, device="cpu", hpi_config={"threads": 1}, cache_dir=cache) as model:
        return {Path(r["input_path"]).name: r for r in model.predict([str(p) for p in paths])}


def test_classifier_callable_keeps_a_bad_image_in_its_row(toy_dir, photo_dir, tmp_path):
    """The map_batches class itself, without Ray: bytes in, PaddleX-format columns out, errors as a column."""
    files = expand_input(str(photo_dir))
    fn = HpiClassifier("ToyNet", str(toy_dir), cache_dir=str(tmp_path))
    out = fn({"bytes": np.array([Path(f).read_bytes() for f in files], dtype=object), "path": np.array(files)})
    want = _predict(toy_dir, tmp_path, [f for f in files if "corrupt" not in f])
    assert out["input_path"] == files
    for i, f in enumerate(files):
        name = Path(f).name
        if name == "zz_corrupt.jpg":
            assert "not a readable image" in out["error"][i] and out["class_ids"][i] == []
        else:
            assert out["error"][i] is None and out["class_ids"][i] == want[name]["class_ids"]
            np.testing.assert_allclose(out["scores"][i], want[name]["scores"], atol=1e-5)
            assert out["label_names"][i] == want[name]["label_names"]


def test_batch_job_on_a_local_cluster_matches_predict(ray_cluster, toy_dir, photo_dir, tmp_path):
    import pyarrow.parquet as pq

    seen = []
    report = run_batch("ToyNet", str(photo_dir), tmp_path / "results.parquet", model_dir=str(toy_dir), workers=2,
                       batch_size=2, cache_dir=str(tmp_path / "cache"), progress=lambda d, t: seen.append((d, t)))
    rows = pq.read_table(report.output).to_pylist()
    assert (report.rows, report.failed, report.workers, report.threads_per_worker) == (5, 1, 2, 1)
    assert seen[-1] == (5, 5)
    want = _predict(toy_dir, tmp_path / "cache", sorted(SAMPLE_IMAGES.glob("*.jpg")))
    assert [Path(r["input_path"]).name for r in rows] == [*sorted(want), "zz_corrupt.jpg"]  # input order
    for row in rows[:-1]:
        res = want[Path(row["input_path"]).name]
        assert row["error"] is None and row["class_ids"] == res["class_ids"]
        assert row["label_names"] == res["label_names"]
        np.testing.assert_allclose(row["scores"], res["scores"], atol=1e-5)
    assert "not a readable image" in rows[-1]["error"] and rows[-1]["class_ids"] == []


def test_hpi_batch_command(ray_cluster, toy_dir, photo_dir, tmp_path, capsys):
    """``hpi batch`` joins the running cluster (as it joins RAY_ADDRESS) and reports the corrupt file."""
    from hpi.cli import main

    code = main(["batch", "--model", "ToyNet", "--model-dir", str(toy_dir), "--input", f"{photo_dir}/*.jpg",
                 "--output", str(tmp_path / "out.parquet"), "--workers", "1", "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1 and "5 image(s)" in out and "(1 failed)" in out
    assert (tmp_path / "out.parquet").is_file()


# --------------------------------------------------------------------------------------------------- Serve


def _serve(app, port: int):
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app, name="hpi", route_prefix="/")
    return f"http://127.0.0.1:{port}"




def _classification_config(toy_dir) -> dict:
    return {"pipeline_name": "image_classification",
            "SubModules": {"ImageClassification": {"model_name": "ToyNet", "model_dir": str(toy_dir)}}}


def test_serve_replicas_answer_the_seeds_client_like_hpi_serve(ray_cluster, toy_dir, tmp_path):
    import httpx
    from fastapi.testclient import TestClient
    from ray import serve

    from hpi.scaleout.ray_serve import build_application, replica_app
    from tests.serving.test_app_classification import CLIENT

    settings = ServeSettings(device="cpu", cache_dir=str(tmp_path / "cache"), index_dir=str(tmp_path / "idx"))
    config = _classification_config(toy_dir)
    url = _serve(build_application("image_classification", settings, config=config, replicas=2,
                                   cpus_per_replica=1), free_port())
    try:
        shutil.copy(SAMPLE_IMAGES / "chelsea.jpg", tmp_path / "demo.jpg")
        (tmp_path / "client.py").write_text(CLIENT.format(url=url), encoding="utf-8")
        run = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        body = {"image": base64.b64encode((SAMPLE_IMAGES / "chelsea.jpg").read_bytes()).decode()}
        replicas, answers = set(), []
        with httpx.Client(base_url=url, timeout=120) as client:
            deadline = time.monotonic() + 120
            while len(replicas) < 2 and time.monotonic() < deadline:
                resp = client.post("/image-classification", json=body)
                replicas.add(resp.headers[REPLICA_HEADER])
                answers.append(resp.json())
        assert len(replicas) == 2, "every request went to one replica"
        # The same JSON as hpi serve in one process (the logId aside).
        with TestClient(replica_app("image_classification", settings, config)) as local:
            want = local.post("/image-classification", json=body).json()
        for got in answers:
            assert {k: v for k, v in got.items() if k != "logId"} == {k: v for k, v in want.items() if k != "logId"}
        assert "Categories:" in run.stdout and (tmp_path / "out.jpg").read_bytes()[:2] == b"\xff\xd8"
    finally:
        serve.shutdown()  # the next test starts Serve again, with its own HTTP port


def test_shared_index_store_sees_another_process_change(tmp_path):
    """Two stores on one directory stand for two replicas: an add through one is read through the other, and
    concurrent adds through both land."""
    from concurrent.futures import ThreadPoolExecutor

    from hpi.retrieval.index import FeatureIndex

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(4, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    a, b = SharedIndexStore(tmp_path), SharedIndexStore(tmp_path)
    key = a.create(FeatureIndex(vecs[:2], ["x", "y"], index_type="Flat", metric_type="IP"))
    assert len(b.get(key)) == 2  # b now holds its own copy in memory
    a.append(key, vecs[2:3], ["z"])
    assert b.get(key).id_map == {0: "x", 1: "y", 2: "z"}
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: s[0].append(key, vecs[3:4], [s[1]]), [(a, "from-a"), (b, "from-b")]))
    assert sorted(a.get(key).id_map.values()) == sorted(b.get(key).id_map.values()) == [
        "from-a", "from-b", "x", "y", "z"]


@pytest.fixture(scope="module")
def shitu_config(tmp_path_factory):
    from hpi import zoo

    root = tmp_path_factory.mktemp("shitu_models")
    dirs = {name: str(zoo.build(name, root / name)) for name in ("PP-ShiTuV2_det", "PP-ShiTuV2_rec")}
    return {"pipeline_name": "PP-ShiTuV2", "SubModules": {
        "Detection": {"model_name": "PP-ShiTuV2_det", "model_dir": dirs["PP-ShiTuV2_det"]},
        "Recognition": {"model_name": "PP-ShiTuV2_rec", "model_dir": dirs["PP-ShiTuV2_rec"]}}}


def test_shitu_add_on_one_replica_is_answered_by_another(ray_cluster, shitu_config, tmp_path):
    import httpx
    from ray import serve

    from hpi.scaleout.ray_serve import build_application

    def b64(name: str) -> str:
        return base64.b64encode((SAMPLE_IMAGES / f"{name}.jpg").read_bytes()).decode()

    settings = ServeSettings(device="cpu", cache_dir=str(tmp_path / "cache"), index_dir=str(tmp_path / "idx"),
                             visualize=False)
    url = _serve(build_application("PP-ShiTuV2", settings, config=shitu_config, replicas=2, cpus_per_replica=1),
                 free_port())
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            built = client.post("/shitu-index-build", json={"imageLabelPairs": [
                {"image": b64("coffee"), "label": "coffee"}]}).json()
            key = built["result"]["indexKey"]

            def labels_by_replica(query: str) -> dict[str, set[str]]:
                """Query until both replicas answered; the labels each one found."""
                found: dict[str, set[str]] = {}
                deadline = time.monotonic() + 180
                while len(found) < 2 and time.monotonic() < deadline:
                    resp = client.post("/shitu-infer", json={"image": b64(query), "indexKey": key})
                    assert resp.status_code == 200, resp.text
                    labels = {r["label"] for o in resp.json()["result"]["detectedObjects"] for r in o["recResults"]}
                    found.setdefault(resp.headers[REPLICA_HEADER], set()).update(labels)
                assert len(found) == 2, "every request went to one replica"
                return found

            before = labels_by_replica("rocket")  # both replicas now hold the one-item index in memory
            assert all(labels <= {"coffee"} for labels in before.values())
            added = client.post("/shitu-index-add", json={"indexKey": key, "imageLabelPairs": [
                {"image": b64("rocket"), "label": "rocket"}]})
            assert added.json()["result"]["idMap"] == {"0": "coffee", "1": "rocket"}
            adder = added.headers[REPLICA_HEADER]
            after = labels_by_replica("rocket")
            other = next(r for r in after if r != adder)
            assert "rocket" in after[other], "the replica that did not take the add still answers from the old index"
    finally:
        serve.shutdown()  # the next test starts Serve again, with its own HTTP port


def test_serve_cli_has_the_ray_engine():
    from hpi.cli import build_parser

    args = build_parser().parse_args(["serve", "--pipeline", "image_classification", "--engine", "ray",
                                      "--replicas", "3", "--cpus-per-replica", "0.5"])
    assert (args.engine, args.replicas, args.cpus_per_replica) == ("ray", 3, 0.5)
    assert build_parser().parse_args(["serve", "--pipeline", "image_classification"]).engine == "uvicorn"
