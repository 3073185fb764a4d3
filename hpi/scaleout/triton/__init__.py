"""Triton Inference Server model repositories from a model and hpi's measured decision (``hpi export --format triton``).

Layout ``hpi`` (the default), for a model ``NAME``::

    REPO/hpi_manifest.json          hpi version, model hash, the selection record, the Triton plan and why, the
                                    expected outputs on the built-in photos, sha256 of every file
    REPO/requirements.txt           the pinned hpi (and ONNX Runtime) the Python models import: install it into the
                                    server's Python environment
    REPO/README.md                  which server runs the repository, and how
    REPO/NAME/config.pbtxt          the engine: dynamic batching, instance groups, threads, accelerators
    REPO/NAME/1/model.onnx          the exported graph (normalisation folded in where high-performance mode folds:
                                    uint8 NHWC input)
    REPO/NAME_preprocess/           Python model: encoded image bytes -> the engine's input (hpi's decoder + resize)
    REPO/NAME_postprocess/          Python model: scores -> CLASS_IDS, SCORES, LABEL_NAMES (top-k, as predict())
    REPO/NAME_ensemble/             the three chained: IMAGE (bytes) in, predict()'s top-k out

Layout ``paddlex``: PaddleX's high-stability-serving layout, one Python model per endpoint
(``image-classification``) taking and returning the JSON bodies of PaddleX's serving protocol, so PaddleX's
``paddlex_hps_client`` works against Triton unchanged.

One job per module:

* :mod:`~hpi.scaleout.triton.plan`: export options, a stated GPU target, decision -> Triton plan.
* :mod:`~hpi.scaleout.triton.pbtxt`: the ``config.pbtxt`` text writer.
* :mod:`~hpi.scaleout.triton.graph`: the ONNX graph's input and output as Triton declares them.
* :mod:`~hpi.scaleout.triton.layouts`: the ``hpi`` and ``paddlex`` layouts' models.
* :mod:`~hpi.scaleout.triton.export`: :func:`export_triton_repository`, the steps in order.
* :mod:`~hpi.scaleout.triton.verify`: a repository checked against its manifest.
* :mod:`~hpi.scaleout.triton.tuned`: an ``hpi tune`` record read into the export options.
* :mod:`~hpi.scaleout.triton.environment`: ``requirements.txt`` and the local server's virtual environment.
* :mod:`~hpi.scaleout.triton.server`: the ``nvidia-pytriton`` wheel's ``tritonserver`` on a repository.
* :mod:`~hpi.scaleout.triton.load`: a load test with Triton's HTTP client.
* :mod:`~hpi.scaleout.triton.python_models`: the Python models themselves (run inside Triton only).

The names below are imported on first use, so that a Python model inside Triton importing
:mod:`~hpi.scaleout.triton.python_models` does not load the exporter (selection, engine cache, ONNX).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "MANIFEST_FILE": "verify", "verify_repository": "verify",
    "ENGINE_BACKENDS": "plan", "OPENVINO_TRAP": "plan", "EnginePlan": "plan", "GpuTarget": "plan",
    "TritonExportOptions": "plan", "plan_engine": "plan", "plan_gpu_target": "plan",
    "to_pbtxt": "pbtxt", "graph_io": "graph",
    "TritonRepository": "export", "export_triton_repository": "export", "expected_outputs": "export",
    "TunedDeployment": "tuned", "read_tune_record": "tuned", "apply_tuned": "tuned",
    "REQUIREMENTS_FILE": "environment", "server_environment": "environment",
    "TritonServer": "server", "LoadResult": "load", "run_load_test": "load",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'hpi.scaleout.triton' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hpi.scaleout.triton.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = sorted(_PUBLIC)
