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


def test_cache_list_marks_entries_and_verify_finds_a_flipped_byte(toy_dir, tmp_path, capsys):
    from hpi.cache import EngineCache

    cache = tmp_path / "cache"
    hpi.create_model("ToyNet", toy_dir, device="cpu", hpi_config={"backend": "onnxruntime"}, cache_dir=cache)
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "0 corrupted" in out and " ok" in out
    onnx = next(e for e in EngineCache(cache).entries() if e.kind == "onnx")
    model = next(p for p in onnx.path.iterdir() if p.suffix == ".onnx")
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    model.write_bytes(bytes(data))
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    listing = [line for line in capsys.readouterr().out.splitlines() if line.startswith("onnx ")]
    assert listing and listing[0].endswith("unverified")  # the listing does not claim what it did not check
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("onnx "))
    assert f"corrupted: {model.name} fails its SHA-256 check" in line and str(tmp_path) not in line
    assert "1 corrupted" in out
    model.write_bytes(data[:100])  # truncated: the listing sees it without reading
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    assert f"corrupted: {model.name} is 100 bytes" in capsys.readouterr().out
