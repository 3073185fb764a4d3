"""Tests for hpi/backends/__init__.py (the lazy backend table) and the capability flags on hpi/backends/base.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import hpi.backends as backends
from hpi.backends import get_backend, list_backends
from hpi.errors import HpiInternalError, InvalidConfigError

ALL = ("onnxruntime", "openvino", "paddle", "tensorrt")


def _imported_after(code: str) -> set[str]:
    """The hpi.backends.* modules imported by ``code`` in a fresh interpreter."""
    script = textwrap.dedent(f"""
        import sys
        {code}
        print(",".join(sorted(m for m in sys.modules if m.startswith("hpi.backends."))))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return set(filter(None, out.stdout.strip().split(",")))


def test_importing_the_package_imports_no_backend():
    assert _imported_after("import hpi.backends; hpi.backends.list_backends()") == set()


@pytest.mark.parametrize("name", ALL)
def test_getting_one_backend_imports_no_other(name):
    assert _imported_after(f"import hpi.backends; hpi.backends.get_backend({name!r})") == {
        "hpi.backends.base", f"hpi.backends.{name}"}


def test_table_lists_every_backend_in_order_and_hands_out_one_instance():
    assert list_backends() == list(ALL)
    assert get_backend("paddle") is get_backend("paddle")


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(InvalidConfigError, match="unknown backend 'tvm'; known: onnxruntime, openvino, paddle"):
        get_backend("tvm")


def test_registering_a_name_twice_is_an_error(monkeypatch):
    monkeypatch.setattr(backends, "_TABLE", dict(backends._TABLE))
    with pytest.raises(HpiInternalError, match="registered twice"):
        backends.register_backend("paddle", "somewhere:Else")
    with pytest.raises(HpiInternalError, match="expected 'module:Class'"):
        backends.register_backend("other", "somewhere.Else")


def test_a_table_entry_whose_class_calls_itself_otherwise_is_an_error(monkeypatch):
    monkeypatch.setattr(backends, "_TABLE", {**backends._TABLE, "ort2": "hpi.backends.onnxruntime:OrtBackend"})
    with pytest.raises(HpiInternalError, match="calls itself 'onnxruntime'"):
        get_backend("ort2")


def test_can_load_replaces_the_format_checks():
    assert get_backend("paddle").can_load("paddle") and not get_backend("paddle").can_load("onnx")
    for name in ("onnxruntime", "openvino", "tensorrt"):  # a Paddle model is exported to ONNX for them
        assert get_backend(name).can_load("onnx") and get_backend(name).can_load("paddle")


def test_capability_flags():
    subgraphs = {name for name in ALL if get_backend(name).capabilities.tensorrt_subgraphs}
    assert subgraphs == {"paddle", "onnxruntime"}
    assert {name for name in ALL if get_backend(name).capabilities.batched_nms} == {"paddle"}
