"""Serving: PaddleX's HTTP protocol over hpi's pipelines (FastAPI + uvicorn, the ``serve`` extra).

* :mod:`hpi.serving.app`: ``create_app(pipeline, settings) -> FastAPI``
* :mod:`hpi.serving.protocol`: the request and response bodies
* :mod:`hpi.serving.batching`: one engine thread per model, dynamic batching in front of it
* :mod:`hpi.serving.limits`: body, image and pixel limits, the request limit, the decode-memory budget
* :mod:`hpi.serving.server`: uvicorn as ``hpi serve`` runs it: header and body deadlines, JSON refusals, clean stop
* :mod:`hpi.serving.workers`: ``--workers N``, several processes behind one port
* :mod:`hpi.serving.fetch`: image URLs fetched by checked address (SSRF and DNS-rebinding safe)
* :mod:`hpi.serving.auth`: API keys and admin keys
* :mod:`hpi.serving.observability`: logIds, the JSON access log, Prometheus metrics
* :mod:`hpi.serving.indexes`: PP-ShiTuV2 indexes built through the API, persisted by key, within quotas
* :mod:`hpi.cli.serve`: ``hpi serve`` (and ``python -m hpi.serving``)

Names are imported on first use, so ``import hpi.serving`` works without FastAPI installed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "hpi.serving.app",
    "ServeSettings": "hpi.serving.common",
    "ServingLimits": "hpi.serving.limits",
    "AuthConfig": "hpi.serving.auth",
    "IndexQuotas": "hpi.serving.indexes",
    "UrlFetcher": "hpi.serving.fetch",
    "BatchingConfig": "hpi.serving.batching",
    "DynamicBatcher": "hpi.serving.batching",
    "EngineWorker": "hpi.serving.batching",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hpi.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
