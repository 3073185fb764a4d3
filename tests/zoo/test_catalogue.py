"""hpi/zoo/catalogue: listing the zoo imports no Paddle; a broken family module or a name defined twice is an error."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hpi.zoo
from hpi.errors import HpiInternalError
from hpi.zoo import catalogue


def test_listing_the_zoo_does_not_import_paddle(tmp_path):
    script = (
        "import sys, hpi.zoo\n"
        "names = hpi.zoo.zoo_models()\n"
        "entries = hpi.zoo.list_models()\n"
        "hpi.zoo.get_model('PP-ShiTuV2_det')\n"
        "assert len(names) == len(entries) > 50, len(names)\n"
        "loaded = sorted(m for m in sys.modules if m == 'paddle' or m.startswith('paddle.'))\n"
        "assert not loaded, loaded\n"
    )
    env = {"HPI_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_family_module_that_does_not_import_is_an_internal_error(monkeypatch):
    monkeypatch.setattr(catalogue, "FAMILY_MODULES", (*catalogue.FAMILY_MODULES, "no_such_family"))
    with pytest.raises(HpiInternalError, match=r"hpi\.zoo\.catalogue\.no_such_family does not import"):
        hpi.zoo.list_models()
    with pytest.raises(HpiInternalError, match="no_such_family"):
        hpi.zoo.get_model("PP-LCNet_x1_0")


def test_a_name_defined_twice_is_an_internal_error(monkeypatch):
    monkeypatch.setattr(catalogue, "FAMILY_MODULES", ("pplcnet", "resnet", "pplcnet"))
    with pytest.raises(HpiInternalError, match=r"'PP-LCNet_x0_25' is defined twice: in hpi\.zoo\.catalogue\.pplcnet"):
        hpi.zoo.list_models()


def test_every_record_names_an_exporter_that_exists():
    for model in hpi.zoo.zoo_models().values():
        assert callable(hpi.zoo.load_exporter(model)), model.name
