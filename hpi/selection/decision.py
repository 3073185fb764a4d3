"""The cached selection decision: reused at once, measured again when the model, hardware, a library version or
the precision policy changes (the key holds all of them)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hpi.artefacts import quantize
from hpi.cache import EngineCache
from hpi.calibration import calibration_set
from hpi.config import AccuracyGate, HpiConfig
from hpi.device import Device, device_signature, resolve_threads
from hpi.selection import measure, record
from hpi.selection.record import SelectionRecord
from hpi.source import ModelSource

DECISION_FILE = "decision.json"


def decision_key(source: ModelSource, device: Device, hpi_config: HpiConfig, batch_size: int, gate: AccuracyGate
                 ) -> dict[str, Any]:
    """What a cached decision depends on: model bytes, hardware, every library version, policy and gate."""
    gate_images = measure.gate_image_set(hpi_config.gate_data)
    return {
        "model": source.content_hash,
        "device": str(device),
        "device_signature": device_signature(device),
        "versions": record.library_versions(device),
        "allow_reduced_precision": hpi_config.allow_reduced_precision,
        "threads": None if device.is_gpu else resolve_threads(hpi_config.threads),
        "batch_size": batch_size,
        "gate": dataclasses.asdict(gate),
        "rule": measure.SELECTION_RULE,
        "int8": int8_key(hpi_config, device),
        # Only when given, so that decisions cached without gate_data keep their keys.
        **({"gate_data": gate_images.key()} if gate_images else {}),
    }


def int8_key(hpi_config: HpiConfig, device: Device = quantize.CPU) -> dict[str, Any] | None:
    """What int8 candidates are built from: the calibration set's content and the quantisation recipe on ``device``
    (its settings, overflow handling included; None when reduced precision is off). A changed calibration set,
    recipe or overflow handling measures the selection again."""
    if not hpi_config.allow_reduced_precision:
        return None
    return {"calibration": calibration_set(hpi_config.calibration_data).key(), "recipe": quantize.recipe(device)}


def cached_selection(source: ModelSource, device: Device, hpi_config: HpiConfig, *, cache: EngineCache,
                     batch_size: int = 1, gate: AccuracyGate | None = None, **kwargs: Any) -> SelectionRecord:
    """The cached decision for this model, hardware, library versions and policy, measuring it if absent.

    ``kwargs`` go to :func:`hpi.selection.measure.select` (``budget_s``, ``isolate``, ``progress``).
    """
    gate = gate or hpi_config.gate()
    parts = decision_key(source, device, hpi_config, batch_size, gate)
    found = cache.lookup("decision", parts)
    if found is not None:
        return read_record(found)
    holder: list[SelectionRecord] = []

    def build(out: Path) -> None:
        measured = measure.select(source, device, hpi_config, cache=cache, batch_size=batch_size, gate=gate, **kwargs)
        holder.append(measured)
        (out / DECISION_FILE).write_text(json.dumps(measured.to_dict(), indent=2), encoding="utf-8")

    entry = cache.get_or_build("decision", parts, build)
    return holder[0] if holder else read_record(entry)


def read_record(entry: Path) -> SelectionRecord:
    """The record stored in a ``decision`` cache entry."""
    return SelectionRecord.from_dict(json.loads((entry / DECISION_FILE).read_text(encoding="utf-8")))
