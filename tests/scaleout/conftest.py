"""What the Triton tests share: one measured decision for the toy model, in one engine cache, for the session."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def triton_selection(toy_dir, tmp_path_factory):
    """The toy model, an engine cache, and its selection record at 2 threads (measured once)."""
    from hpi.cache import EngineCache
    from hpi.config import HpiConfig
    from hpi.device import parse_device
    from hpi.selection.decision import cached_selection
    from hpi.source import ModelSource

    cache = EngineCache(tmp_path_factory.mktemp("triton-cache"))
    source = ModelSource.from_path(toy_dir)
    cfg = HpiConfig(threads=2)
    record = cached_selection(source, parse_device("cpu"), cfg, cache=cache, batch_size=1)
    return SimpleNamespace(source=source, cache=cache, record=record, cfg=cfg)

