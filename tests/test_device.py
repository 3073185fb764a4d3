"""Tests for hpi/device.py's CUDA device facts: cuda-python first, then nvidia-smi, then Paddle, saying which."""

from __future__ import annotations

import sys
import types

import pytest

from hpi import device
from hpi.device import Device, device_signature, gpu_facts
from tests.gpu_fakes import use_simulated_cuda, without_cuda_python


@pytest.fixture(autouse=True)
def fresh_facts():
    gpu_facts.cache_clear()
    yield
    gpu_facts.cache_clear()


def _fake_nvidia_smi(tmp_path, monkeypatch, *lines: str) -> None:  # noqa: ANN001
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir()
    body = "".join(f"echo '{line}'\n" for line in lines)
    script.write_text(f"#!/bin/sh\n{body}", encoding="utf-8")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(script.parent))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _no_paddle(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "paddle", None)
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda name: None if name == "paddle" else object())


def test_cuda_python_answers_first(monkeypatch):
    use_simulated_cuda(monkeypatch)
    facts = gpu_facts()
    assert facts.source == "cuda-python" and facts.devices == (("hpi simulated GPU", 9, 0),)
    assert device.gpu_info(0) == {"name": "hpi simulated GPU", "compute_capability": "9.0"}


def test_without_cuda_python_nvidia_smi_answers_and_says_why(tmp_path, monkeypatch):
    without_cuda_python(monkeypatch)
    _fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA H200, 9.0")
    facts = gpu_facts()
    assert facts.source == "nvidia-smi" and device.cuda_device_count() == 1
    assert facts.notes == ("cuda-python: cuda-python is not installed",)
    assert device.gpu_info(0) == {"name": "NVIDIA H200", "compute_capability": "9.0"}


def test_the_signature_does_not_depend_on_the_source(tmp_path, monkeypatch):
    use_simulated_cuda(monkeypatch)
    from_cuda = device_signature(Device("gpu", 0))
    gpu_facts.cache_clear()
    without_cuda_python(monkeypatch)
    _fake_nvidia_smi(tmp_path, monkeypatch, "hpi simulated GPU, 9.0")
    assert device_signature(Device("gpu", 0)) == from_cuda


def test_nvidia_smi_respects_cuda_visible_devices(tmp_path, monkeypatch):
    without_cuda_python(monkeypatch)
    _fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA A100-SXM4-80GB, 8.0", "NVIDIA L4, 8.9")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert gpu_facts().devices == (("NVIDIA L4", 8, 9),)


def test_paddle_answers_when_the_others_cannot(tmp_path, monkeypatch):
    without_cuda_python(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))
    props = types.SimpleNamespace(name="NVIDIA T4", major=7, minor=5)
    cuda_ns = types.SimpleNamespace(device_count=lambda: 1, get_device_properties=lambda i: props)
    fake = types.SimpleNamespace(device=types.SimpleNamespace(is_compiled_with_cuda=lambda: True, cuda=cuda_ns))
    monkeypatch.setitem(sys.modules, "paddle", fake)
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda name: object())
    facts = gpu_facts()
    assert facts.source == "paddle" and facts.devices == (("NVIDIA T4", 7, 5),)
    assert facts.notes[1] == "nvidia-smi: nvidia-smi is not on PATH"


def test_no_source_means_no_device_and_every_reason_is_kept(tmp_path, monkeypatch):
    without_cuda_python(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))
    _no_paddle(monkeypatch)
    facts = gpu_facts()
    assert facts.source == "none" and device.cuda_device_count() == 0
    assert [n.split(":")[0] for n in facts.notes] == ["cuda-python", "nvidia-smi", "paddle"]
    with pytest.raises(device.BackendUnavailableError, match="cannot query CUDA device 0: 0 visible"):
        device.gpu_info(0)


def test_onnxruntime_gpu_without_cuda_python_is_not_reported_as_no_device(tmp_path, monkeypatch):
    """The defect: a GPU machine without cuda-python read as "no CUDA device" to ONNX Runtime."""
    import onnxruntime

    from hpi.backends import get_backend

    without_cuda_python(monkeypatch)
    _fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA H200, 9.0")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert get_backend("onnxruntime").unavailable_reason(Device("gpu", 0)) is None
    reason = get_backend("onnxruntime").unavailable_reason(Device("gpu", 1))
    assert reason.startswith("no CUDA device gpu:1")


def test_bf16_is_native_only_with_amx_or_avx512_bf16(cpu_without_bf16):
    assert device.precision_reason("fp32", Device("cpu")) is None
    assert device.precision_reason("bf16", Device("cpu")) == "this CPU has neither AMX-BF16 nor AVX512-BF16"
    assert device.precision_reason("fp16", Device("gpu", 0)) is None  # the GPU backends decide


def test_bf16_is_native_with_avx512_bf16(cpu_with_bf16):
    assert device.precision_reason("bf16", Device("cpu")) is None


def test_int8_is_offered_only_with_int8_dot_products(cpu_without_vnni):
    assert not device.cpu_has_int8_dot()
    assert device.precision_reason("int8", Device("cpu")) == "no VNNI/AVX-VNNI/AMX-INT8: int8 would be emulated"


def test_int8_is_native_with_vnni(cpu_with_vnni):
    assert device.cpu_has_int8_dot() and device.precision_reason("int8", Device("cpu")) is None
