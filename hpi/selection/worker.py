"""The measuring side of selection: what each candidate's process runs. :func:`measure_candidate` builds (through
the engine cache), loads, runs and times one candidate, inference alone and end to end through the
:class:`~hpi.models.classification.Predictor` that ``create_model`` would build around its engine.

:mod:`hpi.selection.measure` (the deciding side) starts these processes and names this module only by string
(:data:`~hpi.selection.measure.WORKER`), for :class:`~hpi.harness.IsolatedWorker` and
:func:`~hpi.harness.run_isolated`: the deciding side is imported by the model layer (through the backend choice),
and this side imports the model layer, so neither imports the other.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.npyio import NpzFile

from hpi.backends import get_backend
from hpi.backends.base import Engine
from hpi.backends.choice import BackendChoice
from hpi.cache import EngineCache
from hpi.device import parse_device
from hpi.harness import Timing, time_callable
from hpi.models.classification import Predictor
from hpi.preprocess.decode import decode_image
from hpi.selection import detection
from hpi.source import ModelSource


def engine_from_request(request: dict[str, Any]) -> tuple[ModelSource, Engine, float]:
    """The loaded engine an isolated measurement asks for (keys model_dir, device, backend, config, cache_dir),
    and the seconds its build and load took (cache hits included)."""
    source = ModelSource.from_path(request["model_dir"])
    backend = get_backend(request["backend"])
    t0 = time.perf_counter()
    engine = backend.engine(source, parse_device(request["device"]), request["config"],
                            EngineCache(request["cache_dir"])).load()
    return source, engine, time.perf_counter() - t0


_KEPT: dict[str, tuple[ModelSource, Engine, float]] = {}  # engines kept loaded between rounds (``keep``)


def _engine(request: dict[str, Any], config: dict[str, Any], keep: bool) -> tuple[ModelSource, Engine, float]:
    """The engine ``request`` names with backend config ``config``: the kept one, or a new one (kept when
    ``keep``)."""
    key = json.dumps({**{k: request[k] for k in ("model_dir", "device", "backend", "cache_dir")}, "config": config},
                     sort_keys=True)
    if key in _KEPT:
        return _KEPT[key]
    loaded = engine_from_request({**request, "config": config})
    if keep:
        _KEPT[key] = loaded
    return loaded


def measure_candidate(request: dict[str, Any]) -> dict[str, Any]:
    """Build, run and time one candidate (in its own process: an :class:`~hpi.harness.IsolatedWorker` that keeps
    it for the next round, or :func:`~hpi.harness.run_isolated`).

    Request keys: model_dir, device, backend, config, cache_dir, inputs (an .npy path), outputs (an .npy path to
    write, or None), batch_size, budget_s, warmup; ``timed=False`` writes the outputs only (timing None);
    ``e2e_image`` (a JPEG path) also times the path ``create_model(...).predict`` runs for this candidate, from the
    decoded image to the top-k result, on backend config ``e2e_config`` (the candidate's, with preprocessing folded
    where high-performance mode folds it); ``keep=True`` keeps the engines loaded in this process for the next
    request naming the same candidate; ``{"close": True}`` closes every kept engine.
    """
    if request.get("close"):
        for _, engine, _ in _KEPT.values():
            engine.close()
        _KEPT.clear()
        return {}
    keep = bool(request.get("keep"))
    source, engine, build_s = _engine(request, request["config"], keep)
    inputs = np.load(request["inputs"])
    detector = isinstance(inputs, NpzFile)  # a detector's inputs (hpi.selection.detection.reference_inputs)
    if request.get("outputs") and detector:
        detection.write_detections(engine, inputs, request["outputs"])
    elif request.get("outputs"):
        chunk = max(1, int(request.get("chunk", 8)))
        outputs = np.concatenate([engine.run(inputs[i:i + chunk])[0] for i in range(0, len(inputs), chunk)])
        np.save(request["outputs"], outputs)
    timing = e2e = None
    engines = [engine]
    if request.get("timed", True):
        bs = int(request["batch_size"])
        if detector:
            call = detection.timed_call(engine, inputs, bs)
        else:
            batch = np.ascontiguousarray(np.resize(inputs, (bs, *inputs.shape[1:])))
            call = functools.partial(engine.run, batch)
        sync = getattr(engine, "synchronize", None)
        # Fewer warm-up calls and a smaller floor for big batches: 10 warm-up calls of a large model at batch 8
        # take longer than the timing itself.
        options = {"warmup": int(request.get("warmup", max(3, 10 // bs))), "items_per_call": bs,
                   "budget_s": float(request.get("budget_s", 3.0)), "min_iterations": max(10, 20 // bs)}
        timing = time_callable(call, synchronize=sync, **options).to_dict()
        if request.get("e2e_image") and not detector:  # a detector is timed from prepared tensors to boxes
            e2e_config = request.get("e2e_config") or request["config"]
            if e2e_config != request["config"]:
                _, e2e_engine, _ = _engine(request, e2e_config, keep)
                engines.append(e2e_engine)
            e2e = time_end_to_end(source, engines[-1], request["e2e_image"], options).to_dict()
    if not keep:
        for e in engines:
            e.close()
    return {"timing": timing, "e2e_timing": e2e, "build_s": build_s, "describe": engine.describe()}


def time_end_to_end(source: ModelSource, engine: Engine, image: str, options: dict[str, Any]) -> Timing:
    """Time ``predict()`` of a :class:`~hpi.models.classification.Predictor` on ``engine`` (what
    ``create_model`` builds around it: hpi's preprocessing, or the folded graph's uint8 input) from a decoded
    image (BGR, as PaddleX takes arrays) to its top-k result, ``options["items_per_call"]`` images per call."""
    choice = BackendChoice(engine.name, engine.config, "timed by the selection", "measured")
    predictor = Predictor(source, engine, choice)  # not closed: the engine belongs to the caller
    bs = int(options["items_per_call"])
    bgr = np.ascontiguousarray(decode_image(Path(image).read_bytes(), image)[:, :, ::-1])
    images = [bgr] * bs
    return time_callable(lambda: list(predictor.predict(images, batch_size=bs)), **options)
