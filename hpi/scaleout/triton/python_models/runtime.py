"""What hpi's Triton Python models share: their config parameters, hpi's preprocessing, ONNX Runtime, top-k.

Imported inside Triton from the hpi installed in the server's Python environment, so the decode, resize and crop
are hpi's own code. No Triton import here: the tests exercise these functions directly.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from hpi.errors import InvalidConfigError
from hpi.preprocess.fused import FusedPreprocessor
from hpi.preprocess.graph import ResizeCropU8
from hpi.preprocess.spec import PreprocessSpec
from hpi.version import __version__


def parameters(args: dict[str, Any]) -> dict[str, str]:
    """The ``parameters`` of a model's config.pbtxt as a plain mapping (Triton passes them as JSON).

    Raises:
        InvalidConfigError: the installed hpi is not the version the repository was exported with (its
            ``hpi_version`` parameter): the model would run other code than the export checked.
    """
    config = json.loads(args["model_config"])
    params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    exported = params.get("hpi_version")
    if exported and exported != __version__:
        raise InvalidConfigError(
            f"model {config.get('name')!r} was exported by hpi {exported} but this Python environment has hpi "
            f"{__version__}: install the repository's requirements.txt into the server's Python environment")
    return params


def version_dir(args: dict[str, Any]) -> str:
    """The model's version directory (where model.py, model.onnx and labels.json are)."""
    return os.path.join(args["model_repository"], args["model_version"])


def make_preprocessor(params: dict[str, str]) -> FusedPreprocessor | ResizeCropU8:
    """hpi's CPU preprocessing for the exported graph: resize + crop to uint8 NHWC when the normalisation is
    folded into the graph, else the fused kernel (float32, the model's layout)."""
    spec = PreprocessSpec.from_transform_ops(json.loads(params["transform_ops"]))
    threads = int(params.get("preprocess_threads", "1"))
    kernel = ResizeCropU8 if params.get("folded") == "1" else FusedPreprocessor
    return kernel(spec, threads=threads)


def onnx_session(path: str, threads: int) -> Any:
    """An ONNX Runtime CPU session with the options hpi's onnxruntime backend uses."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Triton calls a model only when a batch is ready: spinning between calls would hold cores others need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def load_labels(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def top_k(row: np.ndarray, k: int) -> np.ndarray:
    """Class indices of the ``k`` highest scores, ties in index order (as hpi's predictor orders them)."""
    return np.argsort(-row, kind="stable")[:k]
