"""Tests for hpi/device.py's CUDA device facts: cuda-python first, then nvidia-smi, then Paddle, saying which."""

from __future__ import annotations

import sys
import types

import pytest

from hpi import cpu, device, gpu, precision
from hpi.device import Device, device_signature
from hpi.errors import InvalidConfigError
from hpi.gpu import gpu_facts
from tests.conftest import fake_cpu_flags
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
    monkeypatch.setattr(gpu.importlib.util, "find_spec", lambda name: None if name == "paddle" else object())


def test_cuda_python_answers_first(monkeypatch):
    use_simulated_cuda(monkeypatch)
    facts = gpu_facts()
    assert facts.source == "cuda-python" and facts.devices == (("hpi simulated GPU", 9, 0),)
    assert gpu.gpu_info(0) == {"name": "hpi simulated GPU", "compute_capability": "9.0"}


def test_without_cuda_python_nvidia_smi_answers_and_says_why(tmp_path, monkeypatch):
    without_cuda_python(monkeypatch)
    _fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA H200, 9.0")
    facts = gpu_facts()
    assert facts.source == "nvidia-smi" and gpu.cuda_device_count() == 1
    assert facts.notes == ("cuda-python: cuda-python is not installed",)
    assert gpu.gpu_info(0) == {"name": "NVIDIA H200", "compute_capability": "9.0"}


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
    monkeypatch.setattr(gpu.importlib.util, "find_spec", lambda name: object())
    facts = gpu_facts()
    assert facts.source == "paddle" and facts.devices == (("NVIDIA T4", 7, 5),)
    assert facts.notes[1] == "nvidia-smi: nvidia-smi is not on PATH"


def test_no_source_means_no_device_and_every_reason_is_kept(tmp_path, monkeypatch):
    without_cuda_python(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))
    _no_paddle(monkeypatch)
    facts = gpu_facts()
    assert facts.source == "none" and gpu.cuda_device_count() == 0
    assert [n.split(":")[0] for n in facts.notes] == ["cuda-python", "nvidia-smi", "paddle"]
    with pytest.raises(device.BackendUnavailableError, match="cannot query CUDA device 0: 0 visible"):
        gpu.gpu_info(0)


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
    assert precision.precision_reason("fp32", Device("cpu")) is None
    assert precision.precision_reason("bf16", Device("cpu")).startswith("this CPU has neither AMX-BF16 nor AVX512-BF16")
    assert precision.precision_reason("fp16", Device("gpu", 0)) is None  # the GPU backends decide


def test_bf16_is_native_with_avx512_bf16(monkeypatch):
    fake_cpu_flags(monkeypatch, add=("avx512f", "avx512_bf16"))  # a decision of this process only
    assert precision.precision_reason("bf16", Device("cpu")) is None


def test_int8_runs_on_avx2_without_vnni_with_the_overflow_risk_named(cpu_without_vnni):
    """An AVX2-only CPU runs int8 (two instructions where VNNI has one, not an emulation), with 16-bit sums that can
    saturate: int8 is offered and the risk is known, so quantisation keeps weights to 7 bits."""
    assert not cpu.cpu_has_int8_dot()
    assert precision.precision_reason("int8", Device("cpu")) is None
    assert precision.int8_overflow_risk(Device("cpu")) and not precision.int8_overflow_risk(Device("gpu", 0))


def test_int8_with_vnni_has_no_overflow_risk(monkeypatch):
    fake_cpu_flags(monkeypatch, add=("avx512f", "avx512_vnni"))
    assert cpu.cpu_has_int8_dot() and precision.precision_reason("int8", Device("cpu")) is None
    assert not precision.int8_overflow_risk(Device("cpu"))


def test_int8_is_not_offered_without_avx2_and_the_reason_names_it(monkeypatch):
    fake_cpu_flags(monkeypatch, keep=lambda f: f.startswith("sse"))
    assert precision.precision_reason("int8", Device("cpu")) == \
        "this CPU has no AVX2, which int8 kernels need for their 8-bit multiply-add (vpmaddubsw)"


# -- HPI_MAX_CPU_ISA: this machine standing in for an older CPU ------------------------------------------------------

FAKE_CPUINFO = ("model name\t: AMD EPYC 9R14\n"
                "flags\t\t: fpu sse4_1 sse4_2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 amx_tile\n")
AVX2_CPUINFO = "model name\t: AMD EPYC 7B13\nflags\t\t: sse4_1 sse4_2 avx avx2 fma f16c\n"


def _fake_cpuinfo(monkeypatch, text: str):  # noqa: ANN001, ANN202
    """/proc/cpuinfo reads ``text`` (and cpu_info forgets what it read before), whatever this machine is."""
    import builtins
    import io

    real_open = builtins.open

    def fake_open(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return io.StringIO(text) if path == "/proc/cpuinfo" else real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    cpu.cpu_info.cache_clear()


@pytest.fixture
def avx512_cpu(monkeypatch):
    """/proc/cpuinfo of an AVX-512 CPU with bf16, VNNI and AMX, whatever this machine is."""
    monkeypatch.delenv(cpu.ISA_CAP_ENV, raising=False)
    _fake_cpuinfo(monkeypatch, FAKE_CPUINFO)
    yield
    cpu.cpu_info.cache_clear()


def test_the_avx2_cap_hides_the_newer_instructions_from_hpi(avx512_cpu, monkeypatch):
    real = cpu.cpu_info()
    assert "avx512_bf16" in real["flags"] and "isa_cap" not in real
    real_signature = device_signature(Device("cpu"))
    monkeypatch.setenv(cpu.ISA_CAP_ENV, "AVX2")
    cpu.cpu_info.cache_clear()
    capped = cpu.cpu_info()
    assert capped["flags"] == ["avx", "avx2", "f16c", "fma", "sse4_1", "sse4_2"]
    assert capped["isa_cap"] == "avx2" and capped["real_flags"] == real["flags"]
    assert precision.precision_reason("bf16", Device("cpu")) == \
        "this CPU has neither AMX-BF16 nor AVX512-BF16 (HPI_MAX_CPU_ISA=avx2)"
    assert precision.precision_reason("int8", Device("cpu")) is None  # AVX2 runs int8, with 7-bit weights
    assert precision.int8_overflow_risk(Device("cpu"))
    assert device_signature(Device("cpu")) != real_signature  # engines built under the cap are kept apart


def test_an_emulated_kind_has_its_own_files_and_says_so(avx512_cpu, monkeypatch):
    from hpi.bench.targets import cpu_kind

    assert cpu_kind().stem == "amd-epyc-amx" and not cpu_kind().emulated
    monkeypatch.setenv(cpu.ISA_CAP_ENV, "avx2")
    cpu.cpu_info.cache_clear()
    kind = cpu_kind()
    assert kind.stem == "amd-epyc-avx2-emulated" and kind.target_class == "avx2" and kind.emulated
    note = kind.emulation_note()
    assert "avx512_bf16" in note and "amx_tile" in note and "ONNX Runtime" in note and "avx2 " not in note


def test_applying_the_cap_sets_the_engines_limits_without_overriding_the_users(monkeypatch):
    import os

    environ = {cpu.ISA_CAP_ENV: "avx2", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    monkeypatch.setattr(os, "environ", environ)  # this process's engines are left as they are
    assert cpu.apply_isa_cap() == "avx2"
    assert environ == {cpu.ISA_CAP_ENV: "avx2", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                       "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}


def test_a_cpu_without_the_hidden_instructions_is_not_called_emulated(monkeypatch):
    from hpi.bench.targets import cpu_kind

    monkeypatch.setenv(cpu.ISA_CAP_ENV, "avx2")
    _fake_cpuinfo(monkeypatch, AVX2_CPUINFO)
    try:
        assert "isa_cap" not in cpu.cpu_info() and cpu_kind().stem == "amd-epyc-avx2"
        assert precision.precision_reason("bf16", Device("cpu")) == "this CPU has neither AMX-BF16 nor AVX512-BF16"
    finally:
        cpu.cpu_info.cache_clear()


def test_no_cap_changes_nothing_and_an_unknown_one_is_named(avx512_cpu, monkeypatch):
    import os

    environ: dict[str, str] = {}
    monkeypatch.setattr(os, "environ", environ)
    assert cpu.apply_isa_cap() is None and environ == {}
    environ[cpu.ISA_CAP_ENV] = "sse2"
    with pytest.raises(InvalidConfigError, match="HPI_MAX_CPU_ISA='sse2': the caps hpi knows are avx2"):
        cpu.cpu_info()


def test_the_cap_reaches_the_engines_in_a_fresh_process():
    """OpenVINO's CPU plugin (oneDNN inside) names the kernel it picked for each node: AVX2 ones under the cap."""
    import os
    import subprocess

    pytest.importorskip("openvino")
    code = ("import hpi, numpy as np, openvino as ov, openvino.opset13 as ops\n"
            "x = ops.parameter([1, 16, 32, 32], ov.Type.f32)\n"
            "w = ops.constant(np.ones((32, 16, 3, 3), np.float32))\n"
            "conv = ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])\n"
            "model = ov.Core().compile_model(ov.Model([conv], [x]), 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})\n"
            "print(' '.join(op.get_rt_info()['primitiveType'].astype(str) for op in model.get_runtime_model().get_ops()))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONEDNN", "DNNL"))}
    env[cpu.ISA_CAP_ENV] = "avx2"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    kernels = out.stdout.split()
    conv = [k for k in kernels if "conv" in k]
    assert conv and all("avx512" not in k and "amx" not in k for k in kernels), kernels
