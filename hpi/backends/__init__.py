"""The backends hpi knows, as an explicit lazy table: name -> "module:Class", imported on first use.

Importing one backend never imports another, and ``import hpi.backends`` imports none. Each backend module
imports its runtime library (Paddle, ONNX Runtime, OpenVINO, TensorRT) only when an engine loads.

Example:
    >>> from hpi.backends import available_backends, get_backend
    >>> get_backend("onnxruntime").capabilities.devices
    frozenset({'cpu', 'gpu'})
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from hpi.errors import HpiInternalError, InvalidConfigError

if TYPE_CHECKING:
    from hpi.backends.base import Backend
    from hpi.device import Device

# The order is the order list_backends() reports and selection tries candidates in.
_TABLE: dict[str, str] = {
    "onnxruntime": "hpi.backends.onnxruntime:OrtBackend",
    "openvino": "hpi.backends.openvino:OpenVinoBackend",
    "paddle": "hpi.backends.paddle:PaddleBackend",
    "tensorrt": "hpi.backends.tensorrt:TensorRtBackend",
}
_INSTANCES: dict[str, Backend] = {}


def register_backend(name: str, target: str) -> None:
    """Add a backend as ``"package.module:Class"``; a duplicate name is an error."""
    if name in _TABLE:
        raise HpiInternalError(f"backend {name!r} is registered twice ({_TABLE[name]} and {target})")
    if target.count(":") != 1:
        raise HpiInternalError(f"backend {name!r}: expected 'module:Class', got {target!r}")
    _TABLE[name] = target


def get_backend(name: str) -> Backend:
    """The backend called ``name``, importing its module on first use."""
    backend = _INSTANCES.get(name)
    if backend is not None:
        return backend
    try:
        module_name, class_name = _TABLE[name].split(":")
    except KeyError:
        raise InvalidConfigError(f"unknown backend {name!r}; known: {', '.join(_TABLE)}") from None
    backend = getattr(importlib.import_module(module_name), class_name)()
    if backend.name != name:
        raise HpiInternalError(f"{_TABLE[name]} calls itself {backend.name!r}, but the table names it {name!r}")
    _INSTANCES[name] = backend
    return backend


def list_backends() -> list[str]:
    """Every known backend name, available here or not (imports nothing)."""
    return list(_TABLE)


def available_backends(device: Device) -> dict[str, str | None]:
    """Each backend's name -> None if it can run on ``device``, else the reason it cannot."""
    return {name: get_backend(name).unavailable_reason(device) for name in _TABLE}
