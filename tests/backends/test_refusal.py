"""A backend library that refuses a graph (Paddle's create_predictor, ONNX Runtime's InferenceSession, OpenVINO's
compile_model raising their own exceptions) makes an EngineBuildError naming the backend, precision and model, so
selection records that candidate as failed instead of stopping on what looks like a bug in hpi."""

from __future__ import annotations

import pytest

from hpi.backends import get_backend
from hpi.backends.base import library_refusal
from hpi.cache import EngineCache
from hpi.device import Device
from hpi.errors import EngineBuildError, HpiInternalError, InvalidInputError
from hpi.source import ModelSource

CPU = Device("cpu")


def test_library_errors_become_build_errors_and_hpi_errors_pass():
    refused = r"^Paddle says no: ValueError: \(InvalidArgument\) shapes$"
    with pytest.raises(EngineBuildError, match=refused), library_refusal("Paddle says no"):
        raise ValueError("(InvalidArgument) shapes\n  [Hint: ...]")
    with pytest.raises(InvalidInputError, match="ours"), library_refusal("x"):
        raise InvalidInputError("ours")
    with pytest.raises(HpiInternalError, match="bug"), library_refusal("x"):
        raise HpiInternalError("bug")


def test_paddle_refusing_a_predictor_is_an_engine_build_error(toy_dir, tmp_path, monkeypatch):
    import paddle.inference as pi

    def refuse(config):  # noqa: ANN001, ANN202
        raise ValueError("(InvalidArgument) The input's second dimension and weight's first dimension differ")

    monkeypatch.setattr(pi, "create_predictor", refuse)
    engine = get_backend("paddle").engine(ModelSource.from_path(toy_dir), CPU, {"precision": "fp32"},
                                          EngineCache(tmp_path))
    with pytest.raises(EngineBuildError, match=r"Paddle Inference cannot build a fp32 predictor for .*: ValueError"):
        engine.load()
