"""Fakes for GPU code on machines without one: the smoke script's simulated CUDA runtime, cuda-python made absent."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_SMOKE = Path(__file__).resolve().parents[1] / "scripts" / "gpu_smoke.py"
CUDA_MODULES = ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart")


def smoke_module():  # noqa: ANN201
    """scripts/gpu_smoke.py as a module (its simulated runtime is the one fake CUDA of the test suite)."""
    spec = importlib.util.spec_from_file_location("hpi_gpu_smoke", _SMOKE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use_simulated_cuda(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Install the simulated cudart (host memory) for this test; returns it, counting live allocations."""
    for name in CUDA_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # records what was there, so the test's end restores it
        monkeypatch.delitem(sys.modules, name)
    return smoke_module().install_cudart(simulate=True)


def without_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every cuda-python import fail, as on a machine without it."""
    for name in CUDA_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
