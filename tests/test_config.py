"""hpi/config.py: hpi_config parsing and the accuracy gate it carries."""

from __future__ import annotations

import pytest

from hpi.config import AccuracyGate, HpiConfig
from hpi.errors import InvalidConfigError


def test_gate_is_configurable_through_hpi_config():
    cfg = HpiConfig.from_dict({"accuracy_gate": {"max_rel_error_reduced": 0.05, "min_top5_overlap": 1.0}})
    assert cfg.gate().max_rel_error_reduced == 0.05 and cfg.gate().min_top5_overlap == 1.0
    assert HpiConfig().gate() == AccuracyGate()
    with pytest.raises(InvalidConfigError, match="accuracy_gate: unknown key"):
        HpiConfig.from_dict({"accuracy_gate": {"top1": 1}}).gate()


def test_unknown_keys_and_wrong_types_are_errors():
    with pytest.raises(InvalidConfigError, match=r"unknown key\(s\) \['backendd'\]"):
        HpiConfig.from_dict({"backendd": "x"})
    with pytest.raises(InvalidConfigError, match="backend_config: expected a mapping"):
        HpiConfig.from_dict({"backend_config": ["threads", 1]})
    with pytest.raises(InvalidConfigError, match="expected a backend name"):
        HpiConfig.from_dict({"backend": 3})
    cfg = HpiConfig(threads=2)
    assert HpiConfig.from_dict(cfg) is cfg and HpiConfig.from_dict(None) == HpiConfig()


def test_config_module_imports_nothing_of_hpi_but_errors():
    import ast
    from pathlib import Path

    import hpi.config

    tree = ast.parse(Path(hpi.config.__file__).read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    modules |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert {m for m in modules if m.split(".")[0] == "hpi"} == {"hpi.errors"}
