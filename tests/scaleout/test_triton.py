"""``hpi export --format triton``: configs parsed with Triton's own schema, the plan, and a real Triton server."""

from __future__ import annotations

import base64
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hpi.device import parse_device
from hpi.errors import ExportError, InvalidConfigError
from hpi.scaleout.triton import (
    MANIFEST_FILE,
    GpuTarget,
    TritonExportOptions,
    export_triton_repository,
    plan_engine,
    verify_repository,
)
from hpi.selection.measure import SAMPLE_IMAGES
from tests.scaleout import tritonserver
from tests.scaleout.tritonserver import parse_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(triton_selection, tmp_path_factory):
    """The toy model exported three ways from one measured decision: onnxruntime engine, Python engine, PaddleX."""
    sel = triton_selection
    root = tmp_path_factory.mktemp("repos")
    out = {}
    for key, options in (("ort", TritonExportOptions(engine_backend="onnxruntime")),
                         # a 20 ms batching window, so that the burst below batches even on a loaded 2-core machine
                         ("python", TritonExportOptions(engine_backend="python", max_queue_delay_us=20000)),
                         ("paddlex", TritonExportOptions(layout="paddlex"))):
        out[key] = export_triton_repository(sel.source, root / key, options=options, cache=sel.cache,
                                            record=sel.record, hpi_config=sel.cfg)
    return SimpleNamespace(source=sel.source, record=sel.record, cache=sel.cache, **out)


def test_every_config_parses_with_tritons_schema(exported):
    for repo in (exported.ort, exported.python, exported.paddlex):
        for model in repo.models:
            config = parse_config(repo.path / model / "config.pbtxt")
            assert config.name == model
            assert (repo.path / model / "1").is_dir()


def _np_dtype(data_type: int) -> np.dtype:
    from tritonclient.grpc import model_config_pb2
    from tritonclient.utils import triton_to_np_dtype

    name = model_config_pb2.DataType.Name(data_type).removeprefix("TYPE_")
    return np.dtype(triton_to_np_dtype({"STRING": "BYTES"}.get(name, name)))


def test_engine_config_agrees_with_the_onnx_graph(exported):
    """Read the ONNX file with onnx itself (not hpi) and compare names, dtypes and dims with the config."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    repo = exported.ort
    name = exported.source.name
    config = parse_config(repo.path / name / "config.pbtxt")
    graph = onnx.load(str(repo.path / name / "1" / "model.onnx")).graph
    assert config.backend == "onnxruntime" and config.default_model_filename == "model.onnx"
    initializers = {t.name for t in graph.initializer}
    onnx_inputs = [i for i in graph.input if i.name not in initializers]
    for declared, actual in ((config.input, onnx_inputs), (config.output, list(graph.output))):
        assert [t.name for t in declared] == [t.name for t in actual]
        for t, a in zip(declared, actual):
            ttype = a.type.tensor_type
            assert _np_dtype(t.data_type) == tensor_dtype_to_np_dtype(ttype.elem_type)
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
            assert dims[0] == -1 and list(t.dims) == dims[1:]  # batch axis dynamic, the rest as in the graph
    assert list(config.input[0].dims) == [64, 64, 3] and _np_dtype(config.input[0].data_type) == np.uint8
    assert config.max_batch_size == 8 and config.dynamic_batching.max_queue_delay_microseconds == 2000
    (group,) = config.instance_group
    threads = int(config.parameters["intra_op_thread_count"].string_value)
    assert group.kind == group.KIND_CPU and group.count * threads == 2  # the cores, split between instances
    assert repo.manifest["preprocess_folded"] is True


def test_ensemble_steps_connect_and_labels_match(exported):
    repo, name = exported.ort, exported.source.name
    configs = {m: parse_config(repo.path / m / "config.pbtxt") for m in repo.models}
    ensemble = configs[f"{name}_ensemble"]
    assert ensemble.platform == "ensemble"
    available = {i.name for i in ensemble.input}  # ensemble tensors produced so far
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert set(step.input_map) == {i.name for i in model.input}
        assert set(step.input_map.values()) <= available, f"{step.model_name} reads a tensor nobody wrote"
        assert set(step.output_map) <= {o.name for o in model.output}
        available |= set(step.output_map.values())
    assert {o.name for o in ensemble.output} <= available
    # Each step's tensors have the dtype and dims the next step declares.
    pre, engine = configs[f"{name}_preprocess"], configs[name]
    assert [(o.name, o.data_type, list(o.dims)) for o in pre.output] == \
        [(i.name, i.data_type, list(i.dims)) for i in engine.input]
    labels = json.loads((repo.path / f"{name}_postprocess" / "1" / "labels.json").read_text(encoding="utf-8"))
    assert len(labels) == engine.output[0].dims[0] == 10


def test_paddlex_layout_is_paddlex_hps_shaped(exported):
    repo = exported.paddlex
    (model,) = repo.models
    assert model == "image-classification"
    config = parse_config(repo.path / model / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 1
    assert [(t.name, _np_dtype(t.data_type)) for t in config.input] == [("input", np.object_)]
    assert [(t.name, _np_dtype(t.data_type)) for t in config.output] == [("output", np.object_)]
    # hpi's own decoder, imported from the installed hpi (hpi serve's drawing needs its serve extra): no copies.
    assert "from hpi.scaleout.triton.python_models.paddlex_classify import TritonPythonModel" in \
        (repo.path / model / "1" / "model.py").read_text(encoding="utf-8")
    assert not list(repo.path.rglob("hpi")) and not list(repo.path.rglob("runtime.py"))
    requirements = [line for line in (repo.path / "requirements.txt").read_text(encoding="utf-8").splitlines()
                    if line and not line.startswith("#")]
    assert requirements[0].startswith("hpi[serve] @ file://") and "onnxruntime>=1.18" in requirements


def test_python_models_import_the_installed_hpi_and_pin_its_version(exported):
    """Every Python model's model.py is one import from hpi; requirements.txt names this hpi's source; the
    repository's README says how to install it into the server's Python environment."""
    from hpi.scaleout.triton.environment import hpi_requirement
    from hpi.version import __version__

    repo, name = exported.python, exported.source.name
    for model, role in ((f"{name}_preprocess", "preprocess"), (f"{name}_postprocess", "postprocess"),
                        (name, "engine")):
        code = (repo.path / model / "1" / "model.py").read_text(encoding="utf-8")
        assert f"from hpi.scaleout.triton.python_models.{role} import TritonPythonModel" in code
        config = parse_config(repo.path / model / "config.pbtxt")
        assert config.parameters["hpi_version"].string_value == __version__
    assert sorted(p.name for p in repo.path.rglob("*.py")) == ["model.py"] * 3  # nothing of hpi copied
    text = (repo.path / "requirements.txt").read_text(encoding="utf-8")
    line, origin = hpi_requirement()
    assert line in text.splitlines() and f"hpi {__version__}" in text
    assert "pip install -r requirements.txt" in (repo.path / "README.md").read_text(encoding="utf-8")
    # The ORT-engine repository's Python models only decode and rank: no ONNX Runtime requirement.
    assert "onnxruntime" not in (exported.ort.path / "requirements.txt").read_text(encoding="utf-8").split("#")[-1]


def test_python_models_refuse_another_hpi_version():
    from hpi.scaleout.triton.python_models.runtime import parameters

    config = {"name": "m", "parameters": {"hpi_version": {"string_value": "0.0.0-other"}, "k": {"string_value": "1"}}}
    with pytest.raises(InvalidConfigError, match="exported by hpi 0.0.0-other.*requirements.txt"):
        parameters({"model_config": json.dumps(config)})
    config["parameters"].pop("hpi_version")
    assert parameters({"model_config": json.dumps(config)}) == {"k": "1"}


def test_manifest_records_decision_and_expected_outputs(exported):
    manifest = json.loads((exported.ort.path / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["model_hash"] == exported.source.content_hash
    assert manifest["selection"]["results"] and manifest["plan"]["decision"]
    assert "bf16 hint" in manifest["openvino_fp32_trap"]
    images = sorted(p.name for p in SAMPLE_IMAGES.glob("*.jpg"))
    assert [e["image"] for e in manifest["expected"]["results"]] == images
    assert verify_repository(exported.ort.path) == []
    onnx_file = exported.ort.path / exported.source.name / "1" / "model.onnx"
    onnx_file.write_bytes(b"tampered")
    (exported.ort.path / "stray.txt").write_text("x")
    try:
        changed, stray = verify_repository(exported.ort.path)
        assert changed.startswith(f"{exported.source.name}/1/model.onnx: ") and "truncated or was replaced" in changed
        assert stray == "stray.txt: not in the manifest"
    finally:
        (exported.ort.path / "stray.txt").unlink()
        shutil.copyfile(exported.python.path / exported.source.name / "1" / "model.onnx",
                        exported.ort.path / exported.source.name / "1" / "model.onnx")


def test_refuses_to_overwrite_a_directory_that_is_not_a_repository(exported, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an hpi Triton repository"):
        export_triton_repository(exported.source, tmp_path, cache=exported.cache, record=exported.record)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def _decision(backend, precision, **config):
    return SimpleNamespace(backend=backend, precision=precision, config=config)


def test_plan_openvino_fp32_is_never_exported_as_openvino():
    cpu = parse_device("cpu")
    plan = plan_engine(_decision("openvino", "fp32"), cpu, TritonExportOptions(target_cores=4, instances=2))
    assert (plan.backend, plan.precision, plan.threads_per_instance) == ("onnxruntime", "fp32", 2)
    assert any("bf16 hint" in note for note in plan.notes)
    with pytest.raises(InvalidConfigError, match="bf16 hint"):
        plan_engine(_decision("openvino", "fp32"), cpu, TritonExportOptions(engine_backend="openvino"))
    accepted = plan_engine(_decision("openvino", "fp32"), cpu, TritonExportOptions(engine_backend="openvino"),
                           bf16_accepted=True)
    assert (accepted.backend, accepted.precision) == ("openvino", "bf16")
    bf16 = plan_engine(_decision("openvino", "bf16"), cpu, TritonExportOptions())
    assert (bf16.backend, bf16.precision) == ("openvino", "bf16")
    with pytest.raises(InvalidConfigError, match="cannot share 4 cores.*--target-cores"):
        plan_engine(_decision("onnxruntime", "fp32"), cpu, TritonExportOptions(target_cores=4, instances=3))


def test_plan_splits_the_deployment_machines_cores():
    """--target-cores: the threads are those of the machine Triton runs on, not of the exporting one."""
    cpu = parse_device("cpu")
    plan = plan_engine(_decision("onnxruntime", "fp32"), cpu, TritonExportOptions(target_cores=64, instances=8))
    assert (plan.instances, plan.threads_per_instance, plan.cores) == (8, 8, 64)
    assert any("64 cores" in note for note in plan.notes)
    three = plan_engine(_decision("onnxruntime", "fp32"), cpu, TritonExportOptions(target_cores=6, instances=3))
    assert (three.instances, three.threads_per_instance) == (3, 2)
    tuned = plan_engine(_decision("onnxruntime", "fp32"), cpu, TritonExportOptions(instances=3, threads_per_instance=2))
    assert (tuned.threads_per_instance, tuned.cores) == (2, 6)
    with pytest.raises(InvalidConfigError, match="need 6 cores, more than target_cores=4"):
        TritonExportOptions(instances=3, threads_per_instance=2, target_cores=4)
    assert any("not yet run by a full Triton server" in note for note in plan.notes)  # onnxruntime: unverified


def test_plan_gpu_fp16_uses_the_tensorrt_accelerator():
    gpu = SimpleNamespace(is_gpu=True, kind="gpu", index=0)
    plan = plan_engine(_decision("tensorrt", "fp16"), gpu, TritonExportOptions(instances=2))
    assert (plan.kind, plan.backend, plan.precision, plan.tensorrt) == ("KIND_GPU", "onnxruntime", "fp16", True)
    plain = plan_engine(_decision("onnxruntime", "fp32"), gpu, TritonExportOptions())
    assert not plain.tensorrt and any("unverified" in note for note in plain.notes)


def test_gpu_repository_from_a_stated_target(exported, tmp_path):
    """--device gpu without a local GPU: the repository is written for a stated compute capability and TensorRT
    version (no selection runs); its config is valid Triton; it is not run here."""
    target = GpuTarget("8.9", "10.13", "fp16")
    repo = export_triton_repository(exported.source, tmp_path / "gpu", device="gpu", gpu_target=target,
                                    cache=exported.cache)
    config = parse_config(repo.path / exported.source.name / "config.pbtxt")
    (group,) = config.instance_group
    assert group.kind == group.KIND_GPU and list(group.gpus) == [0]
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert trt.parameters["trt_engine_cache_enable"] == "1" and trt.parameters["trt_engine_cache_path"].endswith("-sm89")
    manifest = repo.manifest
    assert manifest["selection"] is None and manifest["gpu_target"] == target.to_dict()
    notes = " ".join(manifest["plan"]["notes"])
    assert "first load" in notes and "unverified" in notes and "no measurement" in notes
    for model in repo.models:
        parse_config(repo.path / model / "config.pbtxt")
    with pytest.raises(InvalidConfigError, match="fp16' on the GPU needs TensorRT"):
        GpuTarget("8.9", None, "fp16")
    with pytest.raises(InvalidConfigError, match="compute_capability: expected MAJOR.MINOR"):
        GpuTarget("sm89")
    with pytest.raises(InvalidConfigError, match="device is cpu"):
        export_triton_repository(exported.source, tmp_path / "x", device="cpu", gpu_target=target,
                                 cache=exported.cache)


# ------------------------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def triton_venv(exported):
    """The server's venv with both repositories' requirements installed (hpi from this checkout)."""
    reason = tritonserver.unsupported_reason()
    if reason:
        pytest.skip(f"environment: {reason}")
    tritonserver.ensure_venv(exported.paddlex.path)  # a failure here is a test failure, not a skip
    return tritonserver.ensure_venv(exported.python.path)


def _predict_expected(exported):
    import hpi

    with hpi.create_model(exported.source.name, exported.source.directory, device="cpu", use_hpip=True,
                          hpi_config={"backend": "onnxruntime", "threads": 2, "reduced_decode": False},
                          cache_dir=exported.cache.root) as model:
        return {Path(r["input_path"]).name: r for r in model.predict(sorted(str(p) for p in SAMPLE_IMAGES.glob("*.jpg")))}


def test_real_triton_server_answers_like_predict(exported, triton_venv):
    import tritonclient.http as httpclient

    expected = _predict_expected(exported)
    name = exported.source.name
    with tritonserver.TritonServer(triton_venv, exported.python.path) as server:
        client = httpclient.InferenceServerClient(server.url)

        def infer(data: bytes):
            inp = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[data]], dtype=np.object_))
            return client.infer(f"{name}_ensemble", [inp])

        for image, res in expected.items():
            out = infer((SAMPLE_IMAGES / image).read_bytes())
            assert out.as_numpy("CLASS_IDS")[0].tolist() == res["class_ids"], image
            np.testing.assert_allclose(out.as_numpy("SCORES")[0], res["scores"], atol=1e-5, rtol=0)
            assert [b.decode() for b in out.as_numpy("LABEL_NAMES")[0]] == res["label_names"]

        # A corrupt image fails its own request with a message, not the server.
        with pytest.raises(Exception, match="not a readable image"):
            infer(b"not an image")

        # A burst of concurrent requests is batched: fewer engine executions than images.
        before = _engine_stats(client, name)
        payloads = [(SAMPLE_IMAGES / image).read_bytes() for image in expected] * 12

        def one(data: bytes):
            own = httpclient.InferenceServerClient(server.url)  # a client per thread: truly concurrent requests
            return own.infer(f"{name}_ensemble", [_bytes_input(httpclient, data)]).as_numpy("CLASS_IDS").shape

        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(one, payloads)) == {(1, 5)}
        after = _engine_stats(client, name)
        inferences = after["inference_count"] - before["inference_count"]
        executions = after["execution_count"] - before["execution_count"]
        assert inferences == len(payloads)
        assert executions < inferences, f"{executions} engine executions for {inferences} images: not batched"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes_input(httpclient, data: bytes):
    inp = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return inp


def _engine_stats(client, model: str) -> dict[str, int]:
    (stats,) = client.get_inference_statistics(model)["model_stats"]
    return {"inference_count": int(stats.get("inference_count", 0)),
            "execution_count": int(stats.get("execution_count", 0))}


def test_real_triton_server_paddlex_layout_answers_like_hpi_serve(exported, triton_venv, toy_dir):
    """PaddleX's hps client protocol (JSON in ``input``, JSON out of ``output``) gives hpi serve's categories."""
    import tritonclient.http as httpclient
    from fastapi.testclient import TestClient

    import hpi
    from hpi.serving import ServeSettings, create_app

    data = (SAMPLE_IMAGES / "chelsea.jpg").read_bytes()
    with hpi.create_model("ToyNet", toy_dir, device="cpu", use_hpip=True,
                          hpi_config={"backend": "onnxruntime", "threads": 2, "reduced_decode": False},
                          cache_dir=exported.cache.root) as model, TestClient(
            create_app(model, ServeSettings(device="cpu"))) as http:
        want = http.post("/image-classification", json={"image": b64(data)}).json()
    with tritonserver.TritonServer(triton_venv, exported.paddlex.path) as server:
        client = httpclient.InferenceServerClient(server.url)

        def call(body: dict) -> dict:
            inp = httpclient.InferInput("input", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[json.dumps(body).encode()]], dtype=np.object_))
            return json.loads(client.infer("image-classification", [inp]).as_numpy("output")[0, 0])

        got = call({"image": b64(data)})
        assert got["errorCode"] == 0
        pairs = list(zip(got["result"]["categories"], want["result"]["categories"], strict=True))
        assert [(g["id"], g["name"]) for g, _ in pairs] == [(w["id"], w["name"]) for _, w in pairs]
        np.testing.assert_allclose([g["score"] for g, _ in pairs], [w["score"] for _, w in pairs], atol=1e-5, rtol=0)
        assert got["result"]["image"]  # the visualisation, as PaddleX's client expects
        bad = call({"image": b64(b"not an image")})
        assert bad["errorCode"] == 400 and "not a readable image" in bad["errorMsg"]
        assert call({"image": "http://169.254.169.254/"})["errorCode"] == 403


def test_export_cli_writes_a_repository(exported, tmp_path, capsys):
    from hpi.cli import main

    code = main(["export", "--format", "triton", "--model", "ToyNet", "--model-dir", str(exported.source.directory),
                 "--threads", "2", "--cache-dir", str(exported.cache.root), "--instances", "3", "--target-cores", "6",
                 "--output", str(tmp_path / "repo")])  # the decision is the cached one (same model, policy, threads)
    out = capsys.readouterr().out
    assert code == 0 and "clients call ToyNet_ensemble" in out
    assert "x3, 2 thread(s) each on 6 cores" in out and "pip install -r" in out
    manifest = json.loads((tmp_path / "repo" / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert (manifest["plan"]["instances"], manifest["plan"]["threads_per_instance"]) == (3, 2)
    engine = parse_config(tmp_path / "repo" / "ToyNet" / "config.pbtxt")
    assert engine.instance_group[0].count == 3 and engine.parameters["intra_op_thread_count"].string_value == "2"
    assert manifest["selection"]["created"] == exported.record.created
    for model in manifest["models"]:
        parse_config(tmp_path / "repo" / model / "config.pbtxt")


def test_openvino_engine_is_converted_by_hpis_one_converter(exported, tmp_path):
    """An OpenVINO bf16 plan writes IR through hpi.artefacts.openvino.onnx_to_ir (the engine cache's converter)
    with the tuned stream count; the IR reads back in OpenVINO with the graph's input."""
    import openvino as ov

    from hpi.scaleout.triton.graph import graph_io
    from hpi.scaleout.triton.layouts import LayoutInput, LayoutWriter

    name = exported.source.name
    onnx_file = exported.ort.path / name / "1" / "model.onnx"
    options = TritonExportOptions(target_cores=4, instances=2, openvino_streams=2)
    plan = plan_engine(_decision("openvino", "bf16"), parse_device("cpu"), options)
    io = graph_io(onnx_file)
    given = LayoutInput(exported.source, plan, options, io, True, tuple(str(i) for i in range(10)), 5, onnx_file)
    models, entry = LayoutWriter(tmp_path, given).write_hpi()
    config = parse_config(tmp_path / name / "config.pbtxt")
    assert config.backend == "openvino" and entry == f"{name}_ensemble"
    assert config.parameters["NUM_STREAMS"].string_value == "2"
    assert config.parameters["INFERENCE_NUM_THREADS"].string_value == "2"
    model = ov.Core().read_model(str(tmp_path / name / "1" / "model.xml"))
    assert [p.get_any_name() for p in model.inputs] == [io.input_name]
