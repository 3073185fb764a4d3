"""Reading an ``hpi tune`` record for Triton (``hpi export --format triton --tuned RECORD``).

The record is JSON written by ``hpi tune --target triton``; only these keys are read::

    {"kind": "hpi-tune", "version": 1, "target": "triton", "model": "PP-LCNet_x1_0",
     "backend": "onnxruntime", "precision": "fp32",
     "deployment": {"instances": 2, "threads": 1, "max_batch_size": 8, "batch_delay_ms": 2.0,
                    "preferred_batch_sizes": [4, 8], "streams": null}}
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpi.errors import InvalidConfigError
from hpi.scaleout.triton.plan import TritonExportOptions

TUNE_KIND = "hpi-tune"
TUNE_VERSION = 1


@dataclass(frozen=True)
class TunedDeployment:
    """The deployment a tune record chose for Triton."""

    path: str
    model: str
    backend: str | None
    precision: str | None
    instances: int
    threads: int
    max_batch_size: int
    batch_delay_ms: float
    preferred_batch_sizes: tuple[int, ...]
    streams: int | None


def _count(record: Path, key: str, value: Any) -> int:
    """A positive integer of the record's deployment, or an error naming the key."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidConfigError(f"{record}: deployment.{key}: expected a positive integer, got {value!r}")
    return value


def read_tune_record(path: str | os.PathLike[str]) -> TunedDeployment:
    """Read and check a tune record.

    Raises:
        InvalidConfigError: unreadable or not JSON, not an ``hpi-tune`` record, a record for another target than
            ``triton``, a newer format, or a deployment value of the wrong type (the message names it).
    """
    record = Path(path)
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidConfigError(f"tune record {record}: cannot read it as JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != TUNE_KIND:
        kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise InvalidConfigError(f"tune record {record}: expected kind {TUNE_KIND!r} (a record written by hpi tune), "
                                 f"got {kind!r}")
    if data.get("target") != "triton":
        raise InvalidConfigError(f"tune record {record}: tuned for target {data.get('target')!r}, expected 'triton' "
                                 "(run hpi tune --target triton)")
    version = data.get("version")
    if not isinstance(version, int) or version > TUNE_VERSION:
        raise InvalidConfigError(f"tune record {record}: format version {version!r}; this hpi reads version "
                                 f"{TUNE_VERSION}")
    dep = data.get("deployment")
    if not isinstance(dep, dict):
        raise InvalidConfigError(f"tune record {record}: no 'deployment' object")
    delay = dep.get("batch_delay_ms")
    if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
        raise InvalidConfigError(f"{record}: deployment.batch_delay_ms: expected a non-negative number, got {delay!r}")
    preferred = dep.get("preferred_batch_sizes") or []
    if not isinstance(preferred, list):
        raise InvalidConfigError(f"{record}: deployment.preferred_batch_sizes: expected a list, got {preferred!r}")
    return TunedDeployment(
        path=str(record), model=str(data.get("model")), backend=data.get("backend"), precision=data.get("precision"),
        instances=_count(record, "instances", dep.get("instances")),
        threads=_count(record, "threads", dep.get("threads")),
        max_batch_size=_count(record, "max_batch_size", dep.get("max_batch_size")),
        batch_delay_ms=float(delay),
        preferred_batch_sizes=tuple(_count(record, "preferred_batch_sizes", v) for v in preferred),
        streams=None if dep.get("streams") is None else _count(record, "streams", dep.get("streams")),
    )


def apply_tuned(options: TritonExportOptions, tuned: TunedDeployment, model_name: str) -> TritonExportOptions:
    """``options`` with the record's batching, instances and threads.

    Raises:
        InvalidConfigError: the record is for another model, or its values do not fit (the options' check).
    """
    if tuned.model != model_name:
        raise InvalidConfigError(f"tune record {tuned.path} is for model {tuned.model!r}, not {model_name!r}")
    return dataclasses.replace(
        options, instances=tuned.instances, threads_per_instance=tuned.threads, max_batch_size=tuned.max_batch_size,
        max_queue_delay_us=round(tuned.batch_delay_ms * 1000), preferred_batch_sizes=tuned.preferred_batch_sizes,
        openvino_streams=tuned.streams, tuned_from=tuned.path)
