"""The local model store and the zoo API over it: layout, atomic writes, real-over-seeded, provenance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hpi.errors import InvalidConfigError, ModelSourceError, UnknownModelError


def _leftovers(directory: Path) -> list[str]:
    """Entries other than lock files: what a failed or finished write must not leave behind."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


def test_root_follows_hpi_home(store):
    from hpi.zoo.store import model_dir, models_root

    assert models_root() == store
    assert model_dir("PP-LCNet_x1_0", "seeded") == store / "PP-LCNet_x1_0" / "seeded"


def test_root_defaults_to_user_data_dir(monkeypatch):
    import platformdirs

    from hpi.zoo.store import models_root

    monkeypatch.delenv("HPI_HOME", raising=False)
    assert models_root() == Path(platformdirs.user_data_dir("hpi")) / "models"


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden"])
def test_names_must_be_one_directory(store, bad):
    from hpi.zoo.store import model_dir

    with pytest.raises(InvalidConfigError, match="cannot name a store directory"):
        model_dir(bad, "seeded")


def test_failed_write_leaves_nothing(store):
    from hpi.zoo.store import write_atomic

    target = store / "M" / "seeded"

    def fill(tmp: Path):
        (tmp / "inference.yml").write_text("half written")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, fill, overwrite=False)
    assert not target.exists()
    assert _leftovers(target.parent) == []


def test_failed_overwrite_keeps_the_old_directory(store):
    from hpi.zoo.store import write_atomic

    target = store / "M" / "seeded"
    write_atomic(target, lambda tmp: (tmp / "a").write_text("old") and {"weights": "seeded"}, overwrite=False)

    def fill(tmp: Path):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_atomic(target, fill, overwrite=True)
    assert (target / "a").read_text() == "old"
    assert _leftovers(target.parent) == ["seeded"]


def test_existing_directory_needs_overwrite(store):
    from hpi.zoo.store import write_atomic

    target = store / "M" / "seeded"
    write_atomic(target, lambda tmp: {"weights": "seeded", "seed": 1}, overwrite=False)
    with pytest.raises(ModelSourceError, match=r"already exists \(weights=seeded, seed=1\).*overwrite"):
        write_atomic(target, lambda tmp: {}, overwrite=False)
    write_atomic(target, lambda tmp: {"weights": "seeded", "seed": 2}, overwrite=True)
    assert json.loads((target / "hpi_zoo.json").read_text())["seed"] == 2
    assert _leftovers(target.parent) == ["seeded"]


def _fake_seeded(toy_dir: Path, name: str) -> Path:
    """Put a copy of a model into the store as if `zoo build` had written it."""
    from hpi.zoo.store import model_dir, provenance_record, write_atomic

    def fill(tmp: Path):
        for f in toy_dir.iterdir():
            shutil.copy(f, tmp / f.name)
        return provenance_record("seeded", seed=0, model_name=name)

    return write_atomic(model_dir(name, "seeded"), fill, overwrite=False)


def test_locate_prefers_real_over_seeded(store, toy_dir):
    from hpi.zoo import add, locate, weights_kind

    assert locate("ToyNet") is None
    seeded = _fake_seeded(toy_dir, "ToyNet")
    assert locate("ToyNet") == seeded
    assert weights_kind(seeded) == "seeded"

    real = add("ToyNet", toy_dir)
    assert real == store / "ToyNet" / "real"
    assert locate("ToyNet") == real
    assert weights_kind(real) == "real"
    provenance = json.loads((real / "hpi_zoo.json").read_text())
    assert provenance["weights"] == "real" and provenance["seed"] is None
    assert {"hpi_version", "built_at"} <= set(provenance)
    assert weights_kind(toy_dir) is None  # not from the store: hpi does not know


def test_locate_never_returns_a_damaged_directory(store, toy_dir, caplog):
    from hpi.zoo import add, locate

    seeded = _fake_seeded(toy_dir, "ToyNet")
    real = add("ToyNet", toy_dir)
    record = json.loads((real / "hpi_zoo.json").read_text())
    assert set(record["files"]) == {p.name for p in toy_dir.iterdir()}  # every file's size and sha256
    params = real / "inference.pdiparams"
    params.write_bytes(params.read_bytes()[:-4])  # truncated after it was written
    assert locate("ToyNet") == seeded  # the damaged real weights are skipped, with a warning saying why
    assert "inference.pdiparams" in caplog.text and "hpi zoo add ToyNet" in caplog.text
    (seeded / "inference.yml").write_text("Global: {model_name: Other}\n")
    assert locate("ToyNet") is None


def test_a_reusable_build_with_damaged_files_is_rebuilt(store):
    from hpi.zoo.store import write_atomic

    target = store / "M" / "seeded"

    def fill(tmp):
        (tmp / "weights.bin").write_bytes(b"0123456789")
        return {"weights": "seeded", "seed": 0}

    write_atomic(target, fill, overwrite=False)
    (target / "weights.bin").write_bytes(b"0123")
    write_atomic(target, fill, overwrite=False, reuse=lambda record: record.get("seed") == 0)
    assert (target / "weights.bin").read_bytes() == b"0123456789"


def test_add_validates_the_directory(store, toy_dir, tmp_path):
    from hpi.zoo import add

    with pytest.raises(ModelSourceError, match="model_name='PP-LCNet_x1_0'"):
        add("PP-LCNet_x1_0", toy_dir)
    with pytest.raises(ModelSourceError, match="does not exist"):
        add("ToyNet", tmp_path / "nowhere")
    assert _leftovers(store) == []


def test_build_unknown_model_lists_available(store):
    from hpi.zoo import build

    with pytest.raises(UnknownModelError, match=r"no zoo model 'NoSuchNet'; available: .*PP-LCNet_x1_0"):
        build("NoSuchNet")


def test_build_that_fails_midway_leaves_no_directory(store, monkeypatch):
    from hpi import zoo
    from hpi.errors import ExportError
    from hpi.zoo import export

    def broken_save(layer, directory, **kwargs):
        (directory / "inference.json").write_text("{")  # half a model ...
        raise ExportError("simulated failure while saving")  # ... then the save dies

    monkeypatch.setattr(export, "save_inference_model", broken_save)
    with pytest.raises(ExportError, match="simulated"):
        zoo.build("PP-LCNet_x0_25")
    assert zoo.locate("PP-LCNet_x0_25") is None
    assert _leftovers(store / "PP-LCNet_x0_25") == []


def test_build_store_reuse_and_overwrite(store):
    from hpi import zoo
    from hpi.source import ModelSource

    path = zoo.build("PP-LCNet_x0_25")
    assert path == store / "PP-LCNet_x0_25" / "seeded"
    assert zoo.locate("PP-LCNet_x0_25") == path and zoo.weights_kind(path) == "seeded"
    assert ModelSource.from_path(path, model_name="PP-LCNet_x0_25").format == "paddle"
    record = json.loads((path / "hpi_zoo.json").read_text())
    assert record["seed"] == 0 and record["calibration_min_margin"] >= 2.0 - 1e-3
    stamp = (path / "inference.pdiparams").stat().st_mtime_ns

    assert zoo.build("PP-LCNet_x0_25") == path  # same seed: the stored build is reused
    assert (path / "inference.pdiparams").stat().st_mtime_ns == stamp
    with pytest.raises(ModelSourceError, match="overwrite"):
        zoo.build("PP-LCNet_x0_25", seed=1)
    zoo.build("PP-LCNet_x0_25", seed=1, overwrite=True)
    assert json.loads((path / "hpi_zoo.json").read_text())["seed"] == 1
    assert _leftovers(store / "PP-LCNet_x0_25") == ["seeded"]
    listed = {e.model.name: e for e in zoo.list_models()}
    assert listed["PP-LCNet_x0_25"].seeded == path and listed["PP-LCNet_x0_25"].real is None
