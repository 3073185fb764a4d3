"""hpi/loading.py: the one model lookup and the one loading path."""

from __future__ import annotations

import logging

import pytest

from hpi.errors import ModelSourceError, UnknownModelError
from hpi.loading import locate_model


def test_model_dir_wins_and_its_name_is_checked(toy_dir):
    assert locate_model("ToyNet", toy_dir).directory == toy_dir
    with pytest.raises(ModelSourceError, match="Global.model_name is 'ToyNet' but model_name='Other'"):
        locate_model("Other", toy_dir)


def test_store_then_zoo_build(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("HPI_HOME", str(tmp_path / "home"))
    with pytest.raises(UnknownModelError, match="hpi zoo build NoSuchModel"):
        locate_model("NoSuchModel")
    with pytest.raises(UnknownModelError, match="no zoo model 'NoSuchModel'"):
        locate_model("NoSuchModel", build=True)
    with caplog.at_level(logging.WARNING, logger="hpi.loading"):
        built = locate_model("PP-LCNet_x0_25", build=True)
    assert "SEEDED weights" in caplog.text
    assert locate_model("PP-LCNet_x0_25").directory == built.directory  # now in the store
