"""Ahead-of-time preparation: build a model's engines into the cache (and measure the selection) before serving.

    >>> from hpi.aot import prepare_engines
    >>> report = prepare_engines(source, Device("cpu"), HpiConfig(), EngineCache())  # doctest: +SKIP
    >>> report.record.winner.candidate.label  # doctest: +SKIP
    'openvino[fp32]'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from hpi.backends import get_backend
from hpi.cache import CacheEntry, EngineCache
from hpi.config import HpiConfig
from hpi.device import Device
from hpi.errors import HpiError
from hpi.selection.candidates import Candidate, candidates
from hpi.selection.decision import cached_selection
from hpi.selection.record import SelectionRecord
from hpi.source import ModelSource


@dataclass(frozen=True)
class EngineBuild:
    """One engine built ahead of time, or why it was not."""

    label: str  # the candidate, e.g. "openvino[fp32]"; for a backend that cannot run here, its name
    status: Literal["built", "failed", "unavailable"]
    reason: str = ""  # why it failed or is unavailable


@dataclass(frozen=True)
class PreparedEngines:
    """What :func:`prepare_engines` did, and what the cache now holds for the model."""

    builds: tuple[EngineBuild, ...]  # with ``backends``: every engine built (or not); otherwise empty
    record: SelectionRecord | None  # without ``backends``: the measured selection; otherwise None
    entries: tuple[CacheEntry, ...]  # cache entries derived from the model (see related_entries)


def prepare_engines(source: ModelSource, device: Device, hpi_config: HpiConfig, cache: EngineCache, *,
                    backends: Sequence[str] | None = None,
                    progress: Callable[[str], None] | None = None) -> PreparedEngines:
    """Build every candidate engine of ``backends`` without measuring; or, with no ``backends``, run the measured
    selection at batch 1 (which builds every candidate and caches the decision ``use_hpip=True`` reads).

    Raises:
        InvalidConfigError: an unknown backend name (the message lists the known ones).
    """
    record = None
    builds: tuple[EngineBuild, ...] = ()
    if backends:
        builds = tuple(build_engines(source, device, hpi_config, cache, backends=backends, progress=progress))
    else:
        record = cached_selection(source, device, hpi_config, cache=cache, batch_size=1,
                                  progress=(lambda s: progress(f"measuring {s}")) if progress else None)
    return PreparedEngines(builds, record, tuple(related_entries(cache, source.content_hash)))


def build_engines(source: ModelSource, device: Device, hpi_config: HpiConfig, cache: EngineCache, *,
                  backends: Sequence[str], progress: Callable[[str], None] | None = None) -> list[EngineBuild]:
    """Build (through the cache) every candidate engine of the named backends, without measuring."""
    wanted = {get_backend(name).name for name in backends}  # unknown names raise, listing the known ones
    cands, skipped = candidates(source, device, hpi_config)
    builds = []
    for cand in (c for c in cands if c.backend in wanted):
        if progress:
            progress(f"building {cand.label}")
        try:
            get_backend(cand.backend).engine(source, device, cand.config, cache).load().close()
            builds.append(EngineBuild(cand.label, "built"))
        except HpiError as exc:
            builds.append(EngineBuild(cand.label, "failed", str(exc)))
    builds += [EngineBuild(key, "unavailable", reason) for key, reason in sorted(skipped.items())
               if Candidate.unavailable(key).backend in wanted]
    return builds


def related_entries(cache: EngineCache, model_hash: str) -> list[CacheEntry]:
    """Cache entries derived from a model: its ONNX export, and everything built from that, transitively."""
    entries = cache.entries()
    keys, out = {model_hash}, []
    changed = True
    while changed:
        changed = False
        for e in entries:
            if e in out:
                continue
            if any(str(v) in keys for v in e.parts.values()):
                out.append(e)
                keys.add(e.key)
                changed = True
    return out
