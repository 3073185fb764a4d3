"""Finding TensorRT: which distribution's libraries are installed, loading them, and importing the Python bindings.

pip installs TensorRT's shared libraries (``libnvinfer.so.N`` & co.) in the package ``tensorrt_libs``, provided by
``tensorrt-cu12-libs`` or ``tensorrt-cu13-libs``; the dynamic loader does not search there, so ONNX Runtime's
TensorRT provider cannot find them unless they are loaded first (:func:`preload_tensorrt`). A system install puts
them on the loader's path instead. Both builds report the same version string, so cache keys use
:attr:`TensorRtLibs.key`, which names the distribution (and with it the CUDA major) or the system file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpi.errors import BackendUnavailableError

LIBS_PACKAGE = "tensorrt_libs"
LIBRARIES = ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser")  # load order: the parser needs the other two
TENSORRT_MISSING = "tensorrt is not installed (pip install 'hpi[gpu-cu12]' or 'hpi[gpu-cu13]', matching your driver)"


def module_available(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (a missing parent package counts as missing)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class TensorRtLibs:
    """One installation of TensorRT's shared libraries."""

    distribution: str  # "tensorrt-cu13-libs", "tensorrt-cu12-libs", or "system"
    version: str  # the distribution's version, or the library file's full version for a system install
    major: int  # the libraries' soname major (libnvinfer.so.10 -> 10)
    cuda_major: int | None  # from the distribution name; None for a system install
    directory: Path

    @property
    def key(self) -> str:
        """What cache keys record: cu12 and cu13 builds of one TensorRT version differ here."""
        return f"{self.distribution}=={self.version}"

    def library(self, stem: str) -> Path | None:
        path = self.directory / f"{stem}.so.{self.major}"
        return path if path.exists() else None


def _majors(directory: Path) -> list[int]:
    found = (re.fullmatch(r"libnvinfer\.so\.(\d+)", p.name) for p in directory.glob("libnvinfer.so.*"))
    return sorted({int(m.group(1)) for m in found if m}, reverse=True)


def _pip_libs(major: int | None) -> TensorRtLibs | None:
    try:
        spec = importlib.util.find_spec(LIBS_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(next(iter(spec.submodule_search_locations)))
    majors = [m for m in _majors(directory) if major is None or m == major]
    if not majors:
        return None
    dists = importlib.metadata.packages_distributions().get(LIBS_PACKAGE, [])
    dist = next((d for d in dists if "cu" in d), dists[0] if dists else LIBS_PACKAGE)
    name = dist.lower().replace("_", "-")
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = str(majors[0])
    cuda = re.search(r"-cu(\d+)", name)
    return TensorRtLibs(name, version, majors[0], int(cuda.group(1)) if cuda else None, directory)


def _system_libs(major: int | None) -> TensorRtLibs | None:
    dirs = [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    found = ctypes.util.find_library("nvinfer")  # ldconfig's cache: libnvinfer.so.N
    if found and os.path.isabs(found):
        dirs.append(Path(found).parent)
    dirs += [Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib/aarch64-linux-gnu"), Path("/usr/local/tensorrt/lib")]
    for directory in dirs:
        majors = [m for m in _majors(directory) if major is None or m == major] if directory.is_dir() else []
        if majors:
            real = (directory / f"libnvinfer.so.{majors[0]}").resolve().name  # libnvinfer.so.10.9.0
            version = real.removeprefix("libnvinfer.so.") or str(majors[0])
            return TensorRtLibs("system", version, majors[0], None, directory)
    return None


def find_tensorrt(major: int | None = None) -> TensorRtLibs | None:
    """The installed TensorRT libraries (pip's ``tensorrt_libs`` first, then the system), optionally of one major."""
    return _pip_libs(major) or _system_libs(major)


def preload_tensorrt(major: int | None = None) -> TensorRtLibs:
    """Load TensorRT's libraries into the process (``RTLD_GLOBAL``) so a later ``dlopen`` by soname finds them.

    Raises:
        BackendUnavailableError: no libraries of ``major`` are installed, or one fails to load (the loader's
            message says which dependency is missing, e.g. a CUDA runtime of another major).
    """
    libs = find_tensorrt(major)
    wanted = f"libnvinfer.so.{major}" if major is not None else "libnvinfer.so"
    if libs is None:
        raise BackendUnavailableError(
            f"TensorRT libraries ({wanted}) were not found in the tensorrt_libs package or on the loader's path; "
            f"{TENSORRT_MISSING.removeprefix('tensorrt is not installed ')}"
        )
    for stem in LIBRARIES:
        path = libs.library(stem)
        if path is None:
            continue
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise BackendUnavailableError(f"TensorRT library {path} ({libs.key}) does not load: {exc}") from exc
    return libs


def tensorrt_installed() -> bool:
    return module_available("tensorrt") or module_available("tensorrt_bindings")


def import_tensorrt() -> Any:
    """The TensorRT Python module (``tensorrt``, or ``tensorrt_bindings`` from the bindings wheel alone)."""
    name = "tensorrt" if module_available("tensorrt") else "tensorrt_bindings"
    if not module_available(name):
        raise BackendUnavailableError(TENSORRT_MISSING)
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # the bindings are there but libnvinfer & co. are not
        raise BackendUnavailableError(
            f"tensorrt is installed but does not import ({exc}); its libraries come with tensorrt-cu12-libs or "
            f"tensorrt-cu13-libs"
        ) from exc


def tensorrt_key(trt: Any) -> str:
    """The cache-key identity of an imported TensorRT: its version and the library distribution under it."""
    libs = find_tensorrt(major_of(trt))
    return f"{trt.__version__}|{libs.key if libs else 'libraries-unknown'}"


def major_of(trt: Any) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 0
