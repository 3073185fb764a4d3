"""hpi/bench/targets.py: CPU kinds, the targets per kind, and the bound named for a miss (fake figures)."""

from __future__ import annotations

import pytest

from hpi.bench.targets import Peaks, check_target, cpu_kind, measure_peaks, target_for
from hpi.cpu import cpu_info

XEON = {"model": "Intel(R) Xeon(R) Processor", "cores": 2,
        "flags": ["amx_bf16", "amx_int8", "amx_tile", "avx2", "avx512_bf16", "avx512_vnni", "avx512f", "avx_vnni"]}
EPYC = {"model": "AMD EPYC 7B13", "cores": 2, "flags": ["avx", "avx2", "fma", "sse4_1", "sse4_2"]}
SKYLAKE = {"model": "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", "cores": 2, "flags": ["avx2", "avx512f", "fma"]}
PEAKS = Peaks(2, {"fp32": 311.0, "bf16": 1000.0}, 20.0, {})
B4_MACS, B4_PARAMS = 2_747_647_744, 19_800_000


def test_cpu_kind_names_the_file_and_the_target_class():
    assert (cpu_kind(XEON).stem, cpu_kind(XEON).target_class) == ("intel-xeon-amx", "amx-vnni")
    assert (cpu_kind(EPYC).stem, cpu_kind(EPYC).target_class) == ("amd-epyc-avx2", "avx2")
    assert (cpu_kind(SKYLAKE).stem, cpu_kind(SKYLAKE).target_class) == ("intel-xeon-avx512", None)
    here = cpu_kind(cpu_info())  # this machine's, from /proc/cpuinfo
    assert here == cpu_kind() and here.stem.count("-") >= 1 and here.flags == tuple(cpu_info()["flags"])


def test_targets_per_kind():
    amx, avx2 = cpu_kind(XEON), cpu_kind(EPYC)
    assert target_for("PP-HGNetV2-B4", amx, 1.46)[0] == 3.0
    assert target_for("PP-LCNet_x1_0", amx, 2.99)[0] == 3.5
    assert target_for("PP-HGNetV2-B0", amx, 4.20) == (4.20, "seeds' 4.20x")  # the seeds' speed-up when above 1.5x
    assert target_for("ResNet50", amx, 1.29) == (1.5, "1.5x floor")
    assert target_for("PP-HGNetV2-B4", avx2, 1.46)[0] == 1.3
    target, why = target_for("ResNet50", cpu_kind(SKYLAKE), 1.29)
    assert target is None and "intel-xeon-avx512" in why


def _row(model: str, normal: float, hp: float, backend: str, published: float | None = None) -> dict:
    return {"model": model, "speedup": normal / hp, "normal_p50_ms": normal, "hpi_p50_ms": hp, "hpi_backend": backend,
            "published_speedup": published}


def test_a_met_target_and_a_model_without_target():
    check = check_target(_row("PP-LCNet_x1_0", 3.6, 1.0, "openvino[bf16]", 2.99), cpu_kind(XEON), PEAKS,
                         macs=160_808_128, params=2_950_000)
    assert check.met and check.text.startswith("met: 3.60x >= 3.50x")
    free = check_target(_row("ResNet50", 30.0, 29.0, "onnxruntime[fp32]"), cpu_kind(SKYLAKE), PEAKS, macs=1, params=1)
    assert free.met is None and free.target is None


def test_a_miss_names_the_compute_bound_at_the_chosen_precision():
    # B4 at fp32: 25.66 ms normal, 20.05 ms high-performance; 3x needs 8.55 ms, fp32's roof allows 17.67 ms.
    check = check_target(_row("PP-HGNetV2-B4", 25.66, 20.05, "openvino[fp32]", 1.46), cpu_kind(XEON), PEAKS,
                         macs=B4_MACS, params=B4_PARAMS, overhead_ms=1.3)
    assert check.met is False and check.target == 3.0
    assert "missed by 2.34x" in check.text and "would need 8.55 ms" in check.text
    assert "compute bound at fp32: 17.67 ms" in check.text and "at bf16: 5.50 ms" in check.text
    assert "stands in the way: compute at the chosen fp32" in check.text and "bf16 could reach it" in check.text
    assert "1.30 ms of preprocessing and Python" in check.text


def test_a_miss_beyond_every_measured_roof_says_only_fewer_bits_help():
    slow_bf16 = Peaks(2, {"fp32": 311.0, "bf16": 400.0}, 20.0, {})  # bf16 roof 13.7 ms > 8.55 ms needed
    check = check_target(_row("PP-HGNetV2-B4", 25.66, 14.0, "openvino[bf16]", 1.46), cpu_kind(XEON), slow_bf16,
                         macs=B4_MACS, params=B4_PARAMS)
    assert "stands in the way: compute, even at bf16 (13.74 ms > 8.55 ms)" in check.text
    assert "only fewer bits (int8) can close it" in check.text


def test_a_miss_under_every_roof_is_the_engine_and_memory_is_named_when_it_binds():
    check = check_target(_row("ResNet50", 30.0, 25.0, "openvino[bf16]", 1.29), cpu_kind(XEON), PEAKS,
                         macs=4_111_514_624, params=25_600_000)
    assert "no hardware bound" in check.text and "of the bf16 roof" in check.text  # 8.2 ms bf16 roof < 20 ms needed
    slow_memory = Peaks(2, {"fp32": 311.0, "bf16": 1000.0}, 1.0, {})  # 51 MB of bf16 weights at 1 GB/s: 51 ms
    check = check_target(_row("ResNet50", 30.0, 25.0, "openvino[bf16]", 1.29), cpu_kind(XEON), slow_memory,
                         macs=4_111_514_624, params=25_600_000)
    assert "stands in the way: memory" in check.text
    unknown = check_target(_row("ResNet50", 30.0, 25.0, "openvino[bf16]"), cpu_kind(XEON), None, macs=None,
                           params=None)
    assert "bound not measured" in unknown.text


@pytest.mark.slow
def test_measured_roofs_are_plausible():
    peaks = measure_peaks(repeats=2, n=512)
    assert peaks.gflops["fp32"] > 1 and peaks.memory_gbps > 0.1
    assert set(peaks.notes) >= {"fp32", "bf16", "int8", "memory"}
