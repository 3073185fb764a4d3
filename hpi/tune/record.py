"""The tune record: the chosen deployment in the schema every command reads, its cache key, and its files.

The record (``tune.json`` in the output directory, and a ``tune`` entry in the engine cache) is::

    {"kind": "hpi-tune", "version": 1, "target": "serve", "model": "PP-LCNet_x1_0", "backend": "onnxruntime",
     "precision": "fp32", "deployment": {"instances": 2, "threads": 1, "max_batch_size": 8, "batch_delay_ms": 2.0,
     "preferred_batch_sizes": [4, 8], "streams": null}, ...}

``deployment`` has the same keys for every target (instances are ``hpi serve`` workers, Triton model instances or
Ray Serve replicas); the other top-level keys (budget, percentile, the measurements, the cache key and what it was
made from) are for people and the report. ``hpi serve --tuned tune.json`` and ``hpi export --format triton --tuned
tune.json`` read it through :func:`load_record`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from hpi import storage
from hpi.cache import EngineCache, cache_key
from hpi.cpu import cpu_count, cpu_info
from hpi.device import Device, device_signature
from hpi.errors import InvalidConfigError
from hpi.selection.record import library_versions
from hpi.source import ModelSource

KIND = "hpi-tune"
VERSION = 1
CACHE_KIND = "tune"  # the engine cache's entry kind for finished records
RECORD_FILE = "tune.json"
PROGRESS_FILE = "tune-progress.json"  # the measurements so far, rewritten after each one (resume)
TARGETS = ("serve", "triton", "ray")
DEPLOYMENT_KEYS = ("instances", "threads", "max_batch_size", "batch_delay_ms", "preferred_batch_sizes", "streams")


def tune_key(source: ModelSource, device: Device, *, target: str, budget_ms: float, percentile: float,
             objective: str, concurrency: tuple[int, ...], measured_through: str) -> dict[str, Any]:
    """What a tuned deployment depends on: the model's bytes, the hardware (with its core count, which the
    deployment spreads), every library version, the target, the server its load went through, and the budget."""
    info = cpu_info()
    return {
        "model": source.content_hash,
        "device": str(device),
        "device_signature": device_signature(device),
        "cores": cpu_count(),
        "cpu": str(info.get("model", "")),
        "versions": library_versions(device),
        "target": target,
        "measured_through": measured_through,
        "budget_ms": budget_ms,
        "percentile": percentile,
        "objective": objective,
        "concurrency": list(concurrency),
    }


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """``data`` as indented JSON at ``path``, replaced atomically under its lock."""
    return storage.write_file_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def load_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A tune record read and checked: its kind, version, target and deployment keys.

    Raises:
        InvalidConfigError: the file is not a tune record this version reads (the message says what it found).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidConfigError(f"cannot read tune record {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise InvalidConfigError(f"{path} is not a tune record: expected kind {KIND!r}, got "
                                 f"{data.get('kind') if isinstance(data, dict) else type(data).__name__!r}")
    if data.get("version") != VERSION:
        raise InvalidConfigError(f"{path}: tune record version {data.get('version')!r}; this hpi reads {VERSION}")
    if data.get("target") not in TARGETS:
        raise InvalidConfigError(f"{path}: target {data.get('target')!r}; expected one of {', '.join(TARGETS)}")
    deployment = data.get("deployment")
    missing = [k for k in DEPLOYMENT_KEYS if not isinstance(deployment, dict) or k not in deployment]
    if missing:
        raise InvalidConfigError(f"{path}: the deployment lacks {', '.join(missing)}")
    for key in ("model", "backend", "precision"):
        if not isinstance(data.get(key), str):
            raise InvalidConfigError(f"{path}: {key!r} must be a string, got {data.get(key)!r}")
    return data


def cached_record(cache: EngineCache, parts: dict[str, Any]) -> dict[str, Any] | None:
    """The finished record cached for ``parts``, or None."""
    entry = cache.lookup(CACHE_KIND, parts)
    return load_record(entry / RECORD_FILE) if entry is not None else None


def cache_record(cache: EngineCache, parts: dict[str, Any], record: dict[str, Any]) -> Path:
    """Store a finished record in the engine cache (atomic, locked, checksummed, like a selection decision)."""
    entry = cache.get_or_build(CACHE_KIND, parts, lambda out: write_json(out / RECORD_FILE, record))
    return entry / RECORD_FILE


def read_progress(path: Path, parts: dict[str, Any]) -> list[dict[str, Any]]:
    """The measurements of an interrupted run with the same key (empty when there is none, or another key)."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if data.get("cache_key") != cache_key(parts):
        return []
    return list(data.get("measurements", []))


def apply_to_serve_args(args: argparse.Namespace) -> None:
    """Set ``hpi serve``'s options from the record named by ``args.tuned`` (when given): backend (with
    high-performance mode), precision, workers (a ray record: ``--engine ray``, replicas and CPUs per replica),
    threads, OpenVINO streams, max batch, batching window, visualisation and the event
    loop's niceness. The record's values
    replace the corresponding options; the others (host, port, limits, ...) stay as given.

    Raises:
        InvalidConfigError: not a tune record, or one tuned for Triton.
    """
    path = getattr(args, "tuned", None)
    if not path:
        return
    record = load_record(path)
    if record["target"] not in ("serve", "ray"):
        raise InvalidConfigError(f"{path} was tuned for {record['target']}, not for hpi serve; write its repository "
                                 f"with: hpi export --format triton --tuned {path}")
    d = record["deployment"]
    args.use_hpip = True
    args.backend = record["backend"]
    if record["precision"] != "fp32":
        args.precision = record["precision"]
    args.threads = int(d["threads"])
    if record["target"] == "ray":  # Ray Serve replicas of the same app, each with its threads' CPUs
        args.engine, args.workers = "ray", 1
        args.replicas, args.cpus_per_replica = int(d["instances"]), float(d["threads"])
    else:
        args.workers = int(d["instances"])
    args.streams = int(d["streams"]) if d.get("streams") else None
    args.max_batch, args.batch_window_ms = int(d["max_batch_size"]), float(d["batch_delay_ms"])
    if record.get("visualize") is False:
        args.no_visualize = True
    if record.get("loop_niceness") is not None:
        args.loop_niceness = int(record["loop_niceness"])
