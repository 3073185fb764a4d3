"""hpi/selection/worker.py: what each candidate's process runs, called here in-process through
:func:`hpi.harness.call_in_process` (the same import by name, answers and errors as the isolated child), on the
toy model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpi.api import create_model
from hpi.calibration import BUILTIN_IMAGES
from hpi.errors import HpiError, HpiInternalError
from hpi.harness import call_in_process
from hpi.selection.measure import WORKER, reference_inputs
from hpi.source import ModelSource

TIMING_KEYS = {"p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "mean_ms", "iterations", "items_per_call",
               "throughput"}


@pytest.fixture(scope="module")
def toy_inputs(toy_dir, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The gate's reference inputs of the toy model (the built-in photos and mirrors, preprocessed), as selection
    writes them for its workers."""
    inputs = reference_inputs(ModelSource.from_path(toy_dir))
    path = tmp_path_factory.mktemp("worker") / "inputs.npy"
    np.save(path, inputs)
    return path, inputs


@pytest.fixture(scope="module")
def expected_outputs(toy_dir, engine_cache, toy_inputs) -> np.ndarray:
    """The toy model's outputs on the reference inputs, from the engine create_model loads."""
    with create_model("ToyNet", toy_dir, device="cpu", cache_dir=engine_cache) as model:
        return model.engine.run(toy_inputs[1])[0]


@pytest.fixture
def request_for(toy_dir, engine_cache, toy_inputs, tmp_path):
    def make(**overrides):
        request = {"model_dir": str(toy_dir), "device": "cpu", "backend": "paddle", "config": {"threads": 1},
                   "cache_dir": str(engine_cache), "inputs": str(toy_inputs[0]),
                   "outputs": str(tmp_path / "out.npy"), "batch_size": 2, "budget_s": 0.05, "warmup": 1}
        request.update(overrides)
        return request

    yield make
    call_in_process(WORKER, {"close": True})  # whatever a test kept


def test_a_candidate_is_timed_and_writes_its_outputs(request_for, expected_outputs, tmp_path):
    answer = call_in_process(WORKER, request_for(chunk=3))  # 3 does not divide the 8 inputs: a short last chunk
    timing = answer["timing"]
    assert set(timing) == TIMING_KEYS
    assert timing["items_per_call"] == 2 and timing["iterations"] >= 10  # at least max(10, 20 // batch)
    assert 0 < timing["min_ms"] <= timing["p50_ms"] <= timing["max_ms"]
    assert timing["throughput"] == pytest.approx(2 * 1000 / timing["p50_ms"])
    assert answer["e2e_timing"] is None  # not asked for
    assert answer["build_s"] > 0 and "paddle" in answer["describe"].lower()
    outputs = np.load(tmp_path / "out.npy")
    assert outputs.shape == expected_outputs.shape == (len(expected_outputs), 10)
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-5, atol=1e-6)


def test_untimed_writes_the_outputs_only(request_for, expected_outputs, tmp_path):
    answer = call_in_process(WORKER, request_for(timed=False, e2e_image=str(BUILTIN_IMAGES / "chelsea.jpg")))
    assert answer["timing"] is None and answer["e2e_timing"] is None
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected_outputs, rtol=1e-5, atol=1e-6)


def test_no_outputs_path_writes_nothing(request_for, tmp_path):
    answer = call_in_process(WORKER, request_for(outputs=None))
    assert answer["timing"]["iterations"] >= 10
    assert not (tmp_path / "out.npy").exists()


def test_end_to_end_timing_from_the_decoded_image(request_for):
    answer = call_in_process(WORKER, request_for(outputs=None, batch_size=1,
                                                 e2e_image=str(BUILTIN_IMAGES / "chelsea.jpg")))
    e2e, inference = answer["e2e_timing"], answer["timing"]
    assert set(e2e) == TIMING_KEYS and e2e["items_per_call"] == 1 and e2e["iterations"] >= 10
    # Decoding-free but preprocessing a full photo and building the result: never cheaper than the engine call
    # alone on its 64x64 input (compared by the minimum, the least disturbed call of each).
    assert e2e["min_ms"] > inference["min_ms"]


def test_a_kept_engine_serves_the_next_request_until_closed(request_for):
    first = call_in_process(WORKER, request_for(outputs=None, keep=True))
    second = call_in_process(WORKER, request_for(outputs=None, keep=True))
    assert second["build_s"] == first["build_s"]  # the same loaded engine, not a new build and load
    other = call_in_process(WORKER, request_for(outputs=None, keep=True, config={"threads": 2}))
    assert other["build_s"] != first["build_s"]  # another config is another engine
    assert call_in_process(WORKER, {"close": True}) == {}
    third = call_in_process(WORKER, request_for(outputs=None, keep=True))
    assert third["build_s"] != first["build_s"]  # closed: loaded again


def test_an_unknown_backend_is_a_clear_error(request_for):
    with pytest.raises(HpiError, match=r"InvalidConfigError: unknown backend 'tensorflow'; known: .*paddle"):
        call_in_process(WORKER, request_for(backend="tensorflow"))


def test_a_missing_model_is_a_clear_error(request_for, tmp_path):
    with pytest.raises(HpiError, match=r"ModelSourceError: model path .*no_model does not exist"):
        call_in_process(WORKER, request_for(model_dir=str(tmp_path / "no_model")))


def test_a_request_without_a_required_key_is_a_bug_naming_the_key(request_for):
    request = request_for()
    del request["batch_size"]
    with pytest.raises(HpiInternalError, match=r"(?s)Traceback.*KeyError: 'batch_size'"):
        call_in_process(WORKER, request)
