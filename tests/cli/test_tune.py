"""hpi/cli/tune.py: ``hpi tune`` end to end through the real ``hpi serve`` on loopback (slow), and its options.

The slow tests share one engine cache, so that measured selection (about 1.5 minutes on 2 busy cores) runs once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hpi.cli.tune import duration, levels
from hpi.tune import measure
from hpi.tune.load import Budget, build_request, percentile, run_load
from tests.conftest import free_port
from tests.scaleout.tritonserver import venv_path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "PP-LCNet_x1_0"


def test_durations_and_levels_parse():
    assert duration("20ms", "ms") == 20 and duration("0.5ms", "ms") == 0.5 and duration("2s", "ms") == 2000
    assert duration("300s", "s") == 300 and duration("5m", "s") == 300 and duration("90", "s") == 90
    assert levels("1,2,4") == [1, 2, 4]
    for bad in ("fast", "-1ms"):
        with pytest.raises(argparse.ArgumentTypeError, match="duration"):
            duration(bad, "ms")
    with pytest.raises(argparse.ArgumentTypeError, match="positive integers"):
        levels("1,0")


@pytest.fixture(scope="module")
def lcnet(tmp_path_factory) -> Path:
    """PP-LCNet_x1_0 from the zoo with seeded weights, in a temporary directory (not the user's store)."""
    from hpi import zoo

    return zoo.build(MODEL, tmp_path_factory.mktemp("zoo") / MODEL)


@pytest.fixture(scope="module")
def tune_cache(tmp_path_factory, lcnet) -> Path:
    """An engine cache holding PP-LCNet's selection decision, so that the tests' time budgets go to the search
    (selection counts against a run's time budget, and takes about two minutes on 2 busy cores)."""
    from hpi.cache import EngineCache
    from hpi.config import HpiConfig
    from hpi.device import parse_device
    from hpi.selection.decision import cached_selection
    from hpi.source import ModelSource

    cache = tmp_path_factory.mktemp("tune_cache")
    cached_selection(ModelSource.from_path(lcnet, model_name=MODEL), parse_device("cpu"), HpiConfig(),
                     cache=EngineCache(cache), batch_size=1)
    return cache


def hpi_tune(lcnet: Path, cache: Path, out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpi", "tune", "--model", MODEL, "--model-dir", str(lcnet),
                           "--cache-dir", str(cache), "--output", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.serving
def test_an_impossible_budget_exits_1_saying_how_close_it_came(lcnet, tune_cache, tmp_path):
    out = tmp_path / "tune"
    done = hpi_tune(lcnet, tune_cache, out, "--latency-budget", "0.5ms", "--time-budget", "20s",
                    "--concurrency", "1,2", "--level-seconds", "1", timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "no deployment met the p99 budget of 0.5 ms: the closest was" in done.stderr
    assert "over the 0.5 ms budget" in done.stderr and "run it with" not in done.stdout
    rec = json.loads((out / "tune.json").read_text())
    assert rec["chosen"]["met_budget"] is False and rec["chosen"]["over_budget_ms"] > 0
    assert rec["chosen"]["closest_latency_ms"] == pytest.approx(0.5 + rec["chosen"]["over_budget_ms"], abs=0.011)
    assert "[" in done.stderr and "measuring" in done.stderr  # progress on stderr
    assert (out / "report.html").is_file() and (out / "report.png").is_file()


def served(port: int, clients: int, seconds: float) -> tuple[float, float | None, int]:
    """Throughput, p99 and errors of ``clients`` connections sending the tune's request for ``seconds``."""
    body = json.dumps({"image": base64.b64encode(measure.DEFAULT_IMAGE.read_bytes()).decode()}).encode()
    stats, measured_s = asyncio.run(run_load(port, build_request(port, body), clients, 1.0, seconds, Budget(10**6)))
    return len(stats.latencies_ms) / measured_s, percentile(stats.latencies_ms, 99), sum(stats.errors.values())


def _tune_and_serve_as_printed(lcnet, tune_cache, tmp_path) -> str | None:  # noqa: ANN001
    """One attempt: tune, start the printed command, load it. None when it held, else what went wrong."""
    out, port = tmp_path / "tune", free_port()
    done = hpi_tune(lcnet, tune_cache, out, "--latency-budget", "20ms", "--target", "serve", "--time-budget", "150s",
                    "--concurrency", "1,2,4,8", "--level-seconds", "1.5", "--port", str(port), timeout=900)
    if done.returncode != 0:  # tune itself found no deployment that held the budget when confirmed
        return f"hpi tune exited {done.returncode}: {done.stdout[-1500:]}{done.stderr[-1500:]}"
    lines = done.stdout.splitlines()
    command = lines[lines.index("run it with:") + 1].strip()
    assert command.startswith("hpi serve ") and f"--port {port}" in command and "--tuned" in command
    assert ("the space on 2 cores is small" in done.stdout) == ((os.cpu_count() or 1) <= 2)
    rec = json.loads((out / "tune.json").read_text())
    assert rec["kind"] == "hpi-tune" and rec["target"] == "serve" and rec["chosen"]["met_budget"]
    assert set(rec["deployment"]) == {"instances", "threads", "max_batch_size", "batch_delay_ms",
                                      "preferred_batch_sizes", "streams"}
    chosen = rec["chosen"]
    # the printed command, started as printed (``hpi`` is this interpreter's ``python -m hpi``)
    argv = shlex.split(command)
    proc = subprocess.Popen([sys.executable, "-m", "hpi", *argv[1:]], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        health = measure.wait_healthy(port, proc, 180)
        assert health["models"][0]["backend"] == rec["backend"]
        measure.wait_workers(port, rec["deployment"]["instances"], 180)
        # the best of three windows: other work on a shared machine only ever slows a window down
        runs = [served(port, chosen["concurrency"], 4.0) for _ in range(3)]
    finally:
        measure.stop(proc)
    if sustained(runs, rec):
        return None
    return f"the printed command did not sustain what tune measured: windows {runs}, tune's {chosen}"


def sustained(runs: list[tuple[float, float | None, int]], rec: dict) -> bool:
    """One window (throughput, p99, errors) with 95% of the throughput tune measured for the record's choice, its
    p99 inside the budget, and no error."""
    return any(rps >= 0.95 * rec["chosen"]["throughput_rps"] and p99 is not None and p99 <= rec["budget_ms"]
               and not errors for rps, p99, errors in runs)


@pytest.mark.slow
@pytest.mark.serving
def test_the_printed_command_sustains_what_tune_measured(lcnet, tune_cache, tmp_path):
    """A real 20 ms p99 budget on 2 cores: a p99 is a tail, and one stall of the machine moves it, so the test
    gets a second whole attempt (tune and serve again) and fails only when both miss, with both reasons."""
    _two_attempts(_tune_and_serve_as_printed, lcnet, tune_cache, tmp_path)


def _two_attempts(attempt, lcnet, tune_cache, tmp_path) -> None:  # noqa: ANN001
    """Run ``attempt`` (tune and load what it chose; None when it held, else why not) once more when it misses,
    in a directory of its own; fail with both reasons when both miss."""
    misses = []
    for n in range(2):
        miss = attempt(lcnet, tune_cache, tmp_path / f"attempt{n}")
        if miss is None:
            return
        misses.append(miss)
    pytest.fail("\n---\n".join(misses))


def test_hpi_serve_tuned_sets_the_servers_settings(tmp_path):
    from hpi.cli import build_parser
    from hpi.cli.serve import settings_from_args
    from hpi.tune.measure import deployment_record
    from hpi.tune.record import apply_to_serve_args, write_json
    from hpi.tune.search import Deployment

    d = Deployment("openvino", "bf16", 2, 1, 4, 1.0, loop_niceness=0)
    path = write_json(tmp_path / "tune.json", deployment_record(MODEL, d))
    args = build_parser().parse_args(["serve", "--pipeline", "p.yaml", "--tuned", str(path), "--port", "9000"])
    apply_to_serve_args(args)
    s = settings_from_args(args)
    assert (args.workers, args.port, s.use_hpip, s.visualize, s.loop_niceness) == (2, 9000, True, False, 0)
    assert (s.batching.max_batch, s.batching.window_ms) == (4, 1.0)
    assert s.hpi_config == {"backend": "openvino", "backend_config": {"precision": "bf16"}, "threads": 1}


def _tune_triton_and_serve_the_export(lcnet, tune_cache, tmp_path) -> str | None:  # noqa: ANN001
    """One attempt: tune for Triton through the real tritonserver, write the repository with the printed export
    command, serve it, load it. None when it held, else what went wrong."""
    from hpi.scaleout.triton import TritonServer
    from hpi.tune.triton import triton_traffic
    from tests.scaleout.tritonserver import parse_config

    out = tmp_path / "tune"
    done = hpi_tune(lcnet, tune_cache, out, "--latency-budget", "20ms", "--target", "triton", "--time-budget", "150s",
                    "--concurrency", "1,2,4,8", "--level-seconds", "1.5", timeout=900)
    if done.returncode != 0:
        return f"hpi tune exited {done.returncode}: {done.stdout[-1500:]}{done.stderr[-1500:]}"
    rec = json.loads((out / "tune.json").read_text())
    assert rec["target"] == "triton" and rec["measured_through"].startswith("tritonserver")
    assert rec["triton"]["engine_backend"] == "python" and rec["triton"]["server_version"]
    lines = done.stdout.splitlines()
    command = lines[lines.index("write the Triton repository it measured with:") + 1].strip()
    assert command == rec["export_command"] and "--engine-backend python" in command
    argv = shlex.split(command)
    export = subprocess.run([sys.executable, "-m", "hpi", *argv[1:], "--cache-dir", str(tune_cache)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    repo = Path(argv[argv.index("--output") + 1])
    # the tuned values in config.pbtxt, read with Triton's own schema
    d = rec["deployment"]
    engine = parse_config(repo / MODEL / "config.pbtxt")
    assert engine.max_batch_size == d["max_batch_size"]
    assert engine.dynamic_batching.max_queue_delay_microseconds == round(d["batch_delay_ms"] * 1000)
    assert list(engine.dynamic_batching.preferred_batch_size) == d["preferred_batch_sizes"]
    assert [g.count for g in engine.instance_group] == [d["instances"]]
    assert engine.parameters["intra_op_thread_count"].string_value == str(d["threads"])
    chosen = rec["chosen"]
    with TritonServer(venv_path(), repo, port=free_port()) as server:
        traffic = triton_traffic(server.port, f"{MODEL}_ensemble", measure.DEFAULT_IMAGE)
        runs = []
        for _ in range(3):  # the best of three windows, as for hpi serve
            stats, measured_s = asyncio.run(run_load(server.port, traffic.request, chosen["concurrency"], 1.0, 4.0,
                                                     Budget(10**6), traffic.check))
            runs.append((len(stats.latencies_ms) / measured_s, percentile(stats.latencies_ms, 99),
                         sum(stats.errors.values())))
    if sustained(runs, rec):
        return None
    return f"the exported repository did not sustain what tune measured: windows {runs}, tune's {chosen}"


@pytest.mark.slow
@pytest.mark.serving
def test_triton_target_tunes_through_tritonserver_and_its_repository_meets_the_budget(lcnet, tune_cache, tmp_path,
                                                                                      monkeypatch):
    """``--target triton`` measured through nvidia-pytriton's real tritonserver: the printed ``hpi export`` writes
    a repository whose config.pbtxt carries the tuned values, and that repository, served by the same server,
    sustains 95% of the measured throughput with p99 inside a 20 ms budget (two whole attempts, as above)."""
    from hpi.scaleout.triton.environment import unsupported_reason

    reason = unsupported_reason()
    if reason:
        pytest.skip(f"environment: {reason}")
    # the server's environment the scale-out tests use (hpi installed from this checkout), for tune and the test
    monkeypatch.setenv("HPI_TRITON_VENV", str(venv_path()))
    _two_attempts(_tune_triton_and_serve_the_export, lcnet, tune_cache, tmp_path)


def test_openvino_streams_reach_hpi_serve_through_the_record_and_the_flag(tmp_path):
    from hpi.cli import build_parser
    from hpi.cli.common import hpi_config_values
    from hpi.errors import InvalidConfigError
    from hpi.tune.measure import deployment_record, explicit_arguments
    from hpi.tune.record import apply_to_serve_args, write_json
    from hpi.tune.search import Deployment

    record = deployment_record(MODEL, Deployment("openvino", "fp32", 1, 2, 8, 2.0, streams=2))
    args = build_parser().parse_args(["serve", "--pipeline", "p.yaml", "--tuned",
                                      str(write_json(tmp_path / "tune.json", record))])
    apply_to_serve_args(args)
    assert hpi_config_values(args) == {"backend": "openvino", "threads": 2, "backend_config": {"num_streams": 2}}
    explicit = explicit_arguments("p.yaml", record)
    assert explicit[explicit.index("--streams") + 1] == "2"
    spelled = build_parser().parse_args(["serve", *explicit])
    assert hpi_config_values(spelled) == hpi_config_values(args)  # the spelled-out command is the same server
    with pytest.raises(InvalidConfigError, match="--streams 2 is OpenVINO's: give it with --backend openvino"):
        hpi_config_values(build_parser().parse_args(["serve", "--pipeline", "p.yaml", "--streams", "2"]))


def test_triton_requests_are_kserve_v2_with_the_image_as_a_binary_tensor(tmp_path):
    import struct

    from hpi.tune.triton import check_triton, triton_traffic

    image = tmp_path / "x.jpg"
    image.write_bytes(b"\xff\xd8jpeg bytes")
    request = triton_traffic(8000, "M_ensemble", image).request
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v2/models/M_ensemble/infer HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"] == "application/octet-stream" and int(headers["Content-Length"]) == len(body)
    n = int(headers["Inference-Header-Content-Length"])
    (tensor,) = json.loads(body[:n])["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("IMAGE", "BYTES", [1, 1])
    assert body[n:] == struct.pack("<I", len(image.read_bytes())) + image.read_bytes()
    assert tensor["parameters"]["binary_data_size"] == len(body) - n
    ok = json.dumps({"outputs": [{"name": "CLASS_IDS", "datatype": "INT64", "shape": [1, 5], "data": [1, 2]}]})
    assert check_triton(200, {}, ok.encode()) is None
    assert check_triton(400, {}, b'{"error": "bad"}') == "http_400"
    assert check_triton(200, {}, b'{"outputs": []}') == "no_class_ids"
    assert check_triton(200, {}, b"<html>") == "bad_json"


def test_a_ray_record_runs_ray_serve_replicas(tmp_path):
    from hpi.cli import build_parser
    from hpi.cli.common import hpi_config_values
    from hpi.tune.measure import deployment_record, explicit_arguments
    from hpi.tune.record import apply_to_serve_args, write_json
    from hpi.tune.search import Deployment

    record = deployment_record(MODEL, Deployment("paddle", "fp32", 2, 1, 4, 1.0), target="ray")
    args = build_parser().parse_args(["serve", "--pipeline", "p.yaml", "--tuned",
                                      str(write_json(tmp_path / "tune.json", record))])
    apply_to_serve_args(args)
    assert (args.engine, args.replicas, args.cpus_per_replica, args.workers) == ("ray", 2, 1.0, 1)
    spelled = build_parser().parse_args(["serve", *explicit_arguments("p.yaml", record)])
    assert (spelled.engine, spelled.replicas, spelled.cpus_per_replica, spelled.workers) == ("ray", 2, 1.0, 1)
    assert hpi_config_values(spelled) == hpi_config_values(args) == {"backend": "paddle", "threads": 1}
    triton = write_json(tmp_path / "triton.json", deployment_record(MODEL, Deployment("onnxruntime", "fp32", 1, 2, 8, 2),
                                                                    target="triton"))
    args = build_parser().parse_args(["serve", "--pipeline", "p.yaml", "--tuned", str(triton)])
    from hpi.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match="tuned for triton, not for hpi serve; write its repository with"):
        apply_to_serve_args(args)


@pytest.mark.slow
@pytest.mark.serving
def test_ray_target_tunes_through_ray_serve_and_the_printed_command_runs_it(lcnet, tune_cache, tmp_path):
    """``--target ray`` measured through Ray Serve (a local loopback cluster per deployment): the record says so,
    and the printed ``hpi serve --tuned`` starts Ray Serve with the record's replicas, which classify."""
    out, port = tmp_path / "tune", free_port()
    done = hpi_tune(lcnet, tune_cache, out, "--latency-budget", "200ms", "--target", "ray", "--time-budget", "60s",
                    "--concurrency", "1,2", "--level-seconds", "1", "--port", str(port), timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rec = json.loads((out / "tune.json").read_text())
    assert rec["target"] == "ray" and rec["measured_through"].startswith("Ray Serve")
    lines = done.stdout.splitlines()
    command = lines[lines.index("run it with:") + 1].strip()
    assert command == rec["serve_command"] and "--tuned" in command
    if rec["precision"] == "fp32":  # spelled out only for fp32 (only --tuned can ask for another precision)
        explicit = shlex.split(rec["serve_command_explicit"])
        assert explicit[explicit.index("--replicas") + 1] == str(rec["deployment"]["instances"])
    proc = subprocess.Popen([sys.executable, "-m", "hpi", *shlex.split(command)[1:]], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert measure.wait_healthy(port, proc, 180)["models"][0]["backend"] == rec["backend"]
        measure.wait_replicas(port, rec["deployment"]["instances"], 120)  # every replica answers
        rps, p99, errors = served(port, 1, 2.0)
        assert rps > 0 and errors == 0
    finally:
        measure.stop(proc)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
