"""Tests for hpi/cuda.py on the smoke script's simulated CUDA runtime (host memory) and without cuda-python."""

from __future__ import annotations

import numpy as np
import pytest

from hpi import cuda
from hpi.errors import BackendUnavailableError, InferenceError
from tests.gpu_fakes import use_simulated_cuda, without_cuda_python


def test_without_cuda_python_the_error_names_the_extras(monkeypatch):
    without_cuda_python(monkeypatch)
    assert not cuda.cuda_python_installed()
    with pytest.raises(BackendUnavailableError, match=r"cuda-python is not installed \(pip install 'hpi\[gpu-cu12\]'"):
        cuda.import_cudart()


def test_check_unpacks_values_and_names_failures(monkeypatch):
    cudart = use_simulated_cuda(monkeypatch)
    assert cuda.check(cudart, cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion") == 13000
    assert cuda.check(cudart, cudart.cudaSetDevice(0), "cudaSetDevice(0)") is None
    with pytest.raises(InferenceError, match=r"cudaSetDevice\(3\) failed: cudaErrorInvalidValue"):
        cuda.check(cudart, cudart.cudaSetDevice(3), "cudaSetDevice(3)")
    with pytest.raises(BackendUnavailableError, match="cudaSetDevice"):
        cuda.set_device(3)


def test_device_facts(monkeypatch):
    use_simulated_cuda(monkeypatch)
    assert cuda.device_count() == 1
    assert cuda.device_properties(0) == ("hpi simulated GPU", 9, 0)


def test_buffers_round_trip_on_a_stream_and_free_once(monkeypatch):
    runtime = use_simulated_cuda(monkeypatch)
    data = np.arange(1000, dtype=np.uint8)
    stream = cuda.Stream()
    host_in, host_out, device = cuda.PinnedBuffer(data.nbytes), cuda.PinnedBuffer(data.nbytes), cuda.DeviceBuffer(1000)
    assert len(runtime.live) == 3
    host_in.view[:] = data
    cuda.copy_to_device(device, host_in, data.nbytes, stream, "bytes")
    cuda.copy_to_host(host_out, device, data.nbytes, stream, "bytes")
    stream.synchronize()
    np.testing.assert_array_equal(host_out.view, data)
    cuda.free_all(host_in, host_out, device, None)
    cuda.free_all(host_in, device)  # freeing twice is a no-op
    assert runtime.live == {} and host_in.view.size == 0
    stream.close()
    stream.close()
    with pytest.raises(InferenceError, match="cudaStreamSynchronize failed"):
        stream.synchronize()
