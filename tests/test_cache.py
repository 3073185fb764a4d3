"""hpi/cache.py: content-addressed entries, atomic writes, corruption detection, cross-process locking."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from hpi.cache import MANIFEST, EngineCache, cache_key
from hpi.errors import EngineCacheError


def _writer(payload: bytes, calls: list):
    def build(out):
        calls.append(out)
        (out / "engine.bin").write_bytes(payload)

    return build


def test_hit_returns_same_entry_without_rebuilding(tmp_path):
    cache, calls = EngineCache(tmp_path), []
    first = cache.get_or_build("onnx", {"model": "abc", "opset": 17}, _writer(b"x" * 100, calls))
    second = cache.get_or_build("onnx", {"opset": 17, "model": "abc"}, _writer(b"y", calls))  # key order irrelevant
    assert first == second and len(calls) == 1
    assert (first / "engine.bin").read_bytes() == b"x" * 100
    # A fresh cache object (another process, later) verifies checksums and hits too.
    assert EngineCache(tmp_path).lookup("onnx", {"model": "abc", "opset": 17}) == first


def test_key_change_builds_a_new_entry(tmp_path):
    cache, calls = EngineCache(tmp_path), []
    a = cache.get_or_build("onnx", {"model": "abc", "opset": 17}, _writer(b"a", calls))
    b = cache.get_or_build("onnx", {"model": "abc", "opset": 13}, _writer(b"b", calls))
    c = cache.get_or_build("onnx", {"model": "abd", "opset": 17}, _writer(b"c", calls))
    assert len({a, b, c}) == 3 and len(calls) == 3
    assert cache_key({"model": "abc"}) != cache_key({"model": "abc", "version": "1"})


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_manifest", "extra_garbage_manifest"])
def test_corrupted_entry_is_rebuilt_never_loaded(tmp_path, damage):
    parts = {"model": "abc"}
    entry = EngineCache(tmp_path).get_or_build("tensorrt", parts, _writer(b"0123456789" * 10, []))
    blob = entry / "engine.bin"
    if damage == "truncate":
        blob.write_bytes(blob.read_bytes()[:50])
    elif damage == "flip":
        blob.write_bytes(b"X" + blob.read_bytes()[1:])
    elif damage == "no_manifest":
        (entry / MANIFEST).unlink()
    else:
        (entry / MANIFEST).write_text("{not json")
    cache, calls = EngineCache(tmp_path), []
    assert cache.lookup("tensorrt", parts) is None
    again = cache.get_or_build("tensorrt", parts, _writer(b"0123456789" * 10, calls))
    assert again == entry and len(calls) == 1
    assert (again / "engine.bin").read_bytes() == b"0123456789" * 10


def test_failed_build_leaves_nothing(tmp_path):
    cache = EngineCache(tmp_path)

    def explode(out):
        (out / "half.bin").write_bytes(b"partial")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="converter crashed"):
        cache.get_or_build("openvino", {"model": "m"}, explode)
    assert cache.entries() == []
    assert not any(p.name != ".locks" for p in (tmp_path / "openvino").iterdir())


def test_empty_build_is_an_error(tmp_path):
    with pytest.raises(EngineCacheError, match="produced no files"):
        EngineCache(tmp_path).get_or_build("onnx", {"m": 1}, lambda out: None)


def test_list_and_clear(tmp_path):
    cache = EngineCache(tmp_path)
    cache.get_or_build("onnx", {"m": 1}, _writer(b"1", []))
    cache.get_or_build("openvino", {"m": 1}, _writer(b"22", []))
    entries = cache.entries()
    assert sorted(e.kind for e in entries) == ["onnx", "openvino"]
    assert {e.parts["m"] for e in entries} == {1}
    assert cache.clear("onnx") == 1
    assert [e.kind for e in cache.entries()] == ["openvino"]
    assert cache.clear() == 1 and cache.entries() == []


def test_unwritable_root_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EngineCacheError, match="not usable"):
        EngineCache(blocker / "cache").get_or_build("onnx", {"m": 1}, _writer(b"1", []))


def test_two_processes_build_once(tmp_path):
    """Two processes asking for the same key at the same time: one builds, the other waits and reuses it."""
    script = textwrap.dedent(
        f"""
        import json, os, sys, time
        from hpi.cache import EngineCache
        def build(out):
            with open({str(tmp_path / 'builds.log')!r}, 'a') as fh:
                fh.write(str(os.getpid()) + '\\n')
            time.sleep(1.0)
            (out / 'plan.bin').write_bytes(b'plan')
        path = EngineCache({str(tmp_path / 'cache')!r}).get_or_build('tensorrt', {{'model': 'same'}}, build)
        print(json.dumps(str(path)))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    paths = {json.loads(o.strip().splitlines()[-1]) for o in outputs}
    assert len(paths) == 1
    assert len((tmp_path / "builds.log").read_text().split()) == 1
