"""A benchmark of the toy model, measured once for the tests of hpi/benchmark/."""

from __future__ import annotations

import pytest

from hpi.benchmark import bench_model
from hpi.cache import EngineCache
from hpi.device import Device
from hpi.model import ModelSource


@pytest.fixture(scope="session")
def toy_bench(toy_dir, tmp_path_factory):
    return bench_model(ModelSource.from_path(toy_dir), Device("cpu"), batch_sizes=[1, 2], threads=[1],
                       budget_s=0.2, cache=EngineCache(tmp_path_factory.mktemp("cache")))
