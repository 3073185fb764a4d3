"""Tests for hpi/artefacts/runtime_cache.py: a runtime's own cache is a sealed entry, and later writes stay private."""

from __future__ import annotations

from hpi.artefacts.runtime_cache import README, warmed_copy
from hpi.cache import EngineCache

PARTS = {"model": "abc", "precision": "fp16"}


def test_the_entry_is_built_by_the_warm_up_and_sealed(tmp_path):
    cache = EngineCache(tmp_path)
    warm_ups = []

    def warm_up(directory):
        warm_ups.append(directory)
        (directory / "engine.bin").write_bytes(b"engine for batch 1..8")

    first = warmed_copy(cache, "ort-trt", PARTS, warm_up, "test cache")
    entry = cache.lookup("ort-trt", PARTS)
    assert entry is not None and len(warm_ups) == 1
    assert warm_ups[0] != entry  # the warm-up wrote into the cache's temporary directory, under its lock
    assert sorted(p.name for p in entry.iterdir() if p.name != "manifest.json") == [README, "engine.bin"]
    assert first.path != entry and (first.path / "engine.bin").read_bytes() == b"engine for batch 1..8"

    # The runtime later writes into its private copy (an engine for a new shape): the sealed entry never changes.
    (first.path / "engine.bin").write_bytes(b"rewritten")
    (first.path / "engine-batch-16.bin").write_bytes(b"new")
    assert cache.lookup("ort-trt", PARTS) == entry
    assert not (entry / "engine-batch-16.bin").exists()
    assert (EngineCache(tmp_path).lookup("ort-trt", PARTS) / "engine.bin").read_bytes() == b"engine for batch 1..8"

    second = warmed_copy(cache, "ort-trt", PARTS, warm_up, "test cache")
    assert len(warm_ups) == 1 and second.path != first.path
    first.close()
    second.close()
    assert not first.path.exists() and not second.path.exists()
    assert [e.kind for e in cache.entries()] == ["ort-trt"]  # private copies are not entries
