"""hpi/cli/cache.py: ``hpi cache list | clear`` over the engine cache."""

from __future__ import annotations

import hpi
from hpi.cli import main


def test_cache_list_and_clear(toy_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    hpi.create_model("ToyNet", toy_dir, device="cpu", hpi_config={"backend": "openvino"}, cache_dir=cache)
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    listing = capsys.readouterr().out
    assert "onnx" in listing and "openvino" in listing
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
