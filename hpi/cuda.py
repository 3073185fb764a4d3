"""CUDA through cuda-python: importing the runtime, checked calls, device memory, pinned host memory and streams.

The one place hpi talks to the CUDA runtime. The native TensorRT engine keeps its I/O tensors in
:class:`DeviceBuffer` / :class:`PinnedBuffer` and runs on a :class:`Stream`; device detection asks
:func:`device_count` and :func:`device_properties` first (see :mod:`hpi.device` for the fallbacks when cuda-python
is missing).

cuda-python's calls return ``(cudaError_t, *values)``; :func:`check` turns a failure into an hpi error that names
the call and CUDA's own description. The module is imported on first use, never at import time, and looked up on
every call so a test or the smoke script can put a stand-in in ``sys.modules``.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
from typing import Any

import numpy as np

from hpi.errors import BackendUnavailableError, InferenceError

CUDA_PYTHON_MISSING = (
    "cuda-python is not installed (pip install 'hpi[gpu-cu12]' or 'hpi[gpu-cu13]', matching your driver's CUDA major)"
)


def cuda_python_installed() -> bool:
    """Whether cuda-python's runtime bindings can be imported, without importing them."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except (ImportError, ValueError):  # a missing parent package, or a stand-in module without a spec
            continue
    return False


def import_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime`` from 12.6 on, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as exc:
            raise BackendUnavailableError(CUDA_PYTHON_MISSING) from exc
    return cudart


def error_text(cudart: Any, err: Any) -> str:
    """``cudaErrorX (description)`` for a cudaError_t."""
    name = getattr(err, "name", None) or f"error {int(err)}"
    try:
        ok, text = cudart.cudaGetErrorString(err)
        if int(ok) == 0 and text:
            return f"{name} ({text.decode() if isinstance(text, bytes) else text})"
    except Exception:  # noqa: BLE001 - describing an error must never raise another one
        pass
    return name


def check(cudart: Any, result: Any, what: str, error: type[Exception] = InferenceError) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple: the value(s) on success, ``error`` naming ``what`` else."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise error(f"{what} failed: {error_text(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_count() -> int:
    """Visible CUDA devices; raises :class:`BackendUnavailableError` with CUDA's reason when the call fails."""
    cudart = import_cudart()
    return int(check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount", BackendUnavailableError))


def device_properties(index: int) -> tuple[str, int, int]:
    """Name and compute capability (major, minor) of device ``index``."""
    cudart = import_cudart()
    props = check(cudart, cudart.cudaGetDeviceProperties(index), f"cudaGetDeviceProperties({index})",
                  BackendUnavailableError)
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00 "), int(props.major), int(props.minor)


def set_device(index: int, error: type[Exception] = BackendUnavailableError) -> None:
    cudart = import_cudart()
    check(cudart, cudart.cudaSetDevice(index), f"cudaSetDevice({index})", error)


class Stream:
    """A CUDA stream; ``handle`` is the integer TensorRT's ``execute_async_v3`` takes. Closed twice is fine."""

    def __init__(self) -> None:
        self._cudart = import_cudart()
        self._stream: Any = check(self._cudart, self._cudart.cudaStreamCreate(), "cudaStreamCreate",
                                  BackendUnavailableError)

    @property
    def handle(self) -> int:
        return int(self._stream)

    @property
    def raw(self) -> Any:
        """cuda-python's ``cudaStream_t``, for runtime calls that take the stream."""
        return self._stream

    def synchronize(self) -> None:
        if self._stream is None:
            raise InferenceError("cudaStreamSynchronize failed: the stream is closed")
        check(self._cudart, self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None


class DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``) at the integer address ``ptr``."""

    def __init__(self, nbytes: int, what: str = "a buffer") -> None:
        self._cudart = import_cudart()
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int = int(check(self._cudart, self._cudart.cudaMalloc(self.nbytes),
                                  f"cudaMalloc({self.nbytes}) for {what}"))

    def free(self) -> None:
        if self.ptr:
            self._cudart.cudaFree(self.ptr)
            self.ptr = 0


class PinnedBuffer:
    """``nbytes`` of page-locked host memory (``cudaMallocHost``) and a uint8 numpy view of it."""

    def __init__(self, nbytes: int, what: str = "a buffer") -> None:
        self._cudart = import_cudart()
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int = int(check(self._cudart, self._cudart.cudaMallocHost(self.nbytes),
                                  f"cudaMallocHost({self.nbytes}) for {what}"))
        self.view = np.ctypeslib.as_array((ctypes.c_uint8 * self.nbytes).from_address(self.ptr))

    def free(self) -> None:
        if self.ptr:
            self.view = np.empty(0, np.uint8)  # drop the view before the memory under it goes
            self._cudart.cudaFreeHost(self.ptr)
            self.ptr = 0


def copy_to_device(dst: DeviceBuffer, src: PinnedBuffer, nbytes: int, stream: Stream, what: str) -> None:
    cudart = import_cudart()
    kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    check(cudart, cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, stream.raw), f"copying {what} to the GPU")


def copy_to_host(dst: PinnedBuffer, src: DeviceBuffer, nbytes: int, stream: Stream, what: str) -> None:
    cudart = import_cudart()
    kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(cudart, cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, stream.raw), f"copying {what} from the GPU")


def free_all(*buffers: DeviceBuffer | PinnedBuffer | None) -> None:
    """Free every buffer given; one failing does not keep the others allocated."""
    for buf in buffers:
        if buf is not None:
            with contextlib.suppress(Exception):
                buf.free()
