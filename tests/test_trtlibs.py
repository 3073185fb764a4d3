"""Tests for hpi/trtlibs.py with fake package layouts: pip's tensorrt_libs per CUDA major, and a system install."""

from __future__ import annotations

import ctypes
import importlib
import types

import pytest

from hpi import trtlibs
from hpi.errors import BackendUnavailableError


def _pip_layout(root, dist: str, version: str, major: int = 10):  # noqa: ANN001, ANN202
    """site-packages with tensorrt_libs/libnvinfer*.so.<major> and the dist-info of ``dist``."""
    package = root / "tensorrt_libs"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    for stem in trtlibs.LIBRARIES:
        (package / f"{stem}.so.{major}").write_bytes(b"not an ELF file")
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
    (info / "top_level.txt").write_text("tensorrt_libs\n", encoding="utf-8")
    return package


@pytest.fixture
def no_system_tensorrt(monkeypatch):
    monkeypatch.setattr(trtlibs, "_system_libs", lambda major: None)


def _on_path(monkeypatch, root) -> None:  # noqa: ANN001
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()


@pytest.mark.parametrize(("dist", "cuda_major"), [("tensorrt-cu12-libs", 12), ("tensorrt-cu13-libs", 13)])
def test_pip_libraries_are_found_with_their_distribution(tmp_path, monkeypatch, no_system_tensorrt, dist, cuda_major):
    package = _pip_layout(tmp_path, dist, "10.13.0.35")
    _on_path(monkeypatch, tmp_path)
    libs = trtlibs.find_tensorrt(10)
    assert (libs.distribution, libs.version, libs.major, libs.cuda_major) == (dist, "10.13.0.35", 10, cuda_major)
    assert libs.directory == package and libs.key == f"{dist}==10.13.0.35"
    assert trtlibs.find_tensorrt(11) is None  # ONNX Runtime's provider needs .so.10; an 11-only install is no match


def test_cu12_and_cu13_builds_of_one_version_get_different_keys(tmp_path, monkeypatch, no_system_tensorrt):
    trt = types.SimpleNamespace(__version__="10.13.0.35")
    keys = set()
    for dist in ("tensorrt-cu12-libs", "tensorrt-cu13-libs"):
        root = tmp_path / dist
        _pip_layout(root, dist, "10.13.0.35")
        with monkeypatch.context() as m:
            _on_path(m, root)
            keys.add(trtlibs.tensorrt_key(trt))
    assert keys == {"10.13.0.35|tensorrt-cu12-libs==10.13.0.35", "10.13.0.35|tensorrt-cu13-libs==10.13.0.35"}


def test_preload_loads_each_library_globally_in_order(tmp_path, monkeypatch, no_system_tensorrt):
    package = _pip_layout(tmp_path, "tensorrt-cu13-libs", "10.13.0.35")
    _on_path(monkeypatch, tmp_path)
    loaded = []
    monkeypatch.setattr(trtlibs.ctypes, "CDLL", lambda path, mode: loaded.append((path, mode)))
    libs = trtlibs.preload_tensorrt(10)
    assert libs.cuda_major == 13
    assert loaded == [(str(package / f"{stem}.so.10"), ctypes.RTLD_GLOBAL) for stem in trtlibs.LIBRARIES]


def test_preload_of_a_broken_library_says_which_file(tmp_path, monkeypatch, no_system_tensorrt):
    package = _pip_layout(tmp_path, "tensorrt-cu12-libs", "10.13.0.35")
    _on_path(monkeypatch, tmp_path)
    with pytest.raises(BackendUnavailableError, match=f"{package / 'libnvinfer.so.10'}.*tensorrt-cu12-libs.*does not load"):
        trtlibs.preload_tensorrt(10)


def test_preload_without_libraries_says_what_was_looked_for(monkeypatch, no_system_tensorrt):
    monkeypatch.setattr(trtlibs, "_pip_libs", lambda major: None)
    with pytest.raises(BackendUnavailableError, match=r"libnvinfer.so.10\) were not found.*hpi\[gpu-cu13\]"):
        trtlibs.preload_tensorrt(10)


def test_system_libraries_on_the_loader_path(tmp_path, monkeypatch):
    monkeypatch.setattr(trtlibs, "_pip_libs", lambda major: None)
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libnvinfer.so.10.9.0").write_bytes(b"")
    (lib / "libnvinfer.so.10").symlink_to("libnvinfer.so.10.9.0")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib))
    libs = trtlibs.find_tensorrt(10)
    assert (libs.distribution, libs.version, libs.cuda_major, libs.directory) == ("system", "10.9.0", None, lib)
    assert libs.key == "system==10.9.0"
