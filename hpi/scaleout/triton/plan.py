"""What hpi's decision becomes on Triton: the export options, the GPU target, and :func:`plan_engine`.

How the decision maps onto Triton (recorded in the manifest, with the reason):

* ONNX Runtime fp32 -> the ``onnxruntime`` backend. Paddle decisions -> ``onnxruntime`` fp32 too: Triton has no
  maintained Paddle backend, and the fp32 backends agree within the accuracy gate.
* OpenVINO: Triton's OpenVINO backend has no way to force fp32 (only a bf16 hint), and on CPUs with AMX the CPU
  plugin runs bf16 by default. An fp32 OpenVINO decision is therefore exported for ``onnxruntime`` fp32; only a
  bf16 decision (the gate accepted bf16) is exported for the ``openvino`` backend.
* GPU: ``KIND_GPU`` instances on ONNX Runtime; with TensorRT, ONNX Runtime's TensorRT accelerator (FP16 or FP32)
  with an engine cache. A GPU repository can be written on a machine without a GPU from a stated
  :class:`GpuTarget`; the TensorRT engines are then built by the server on first load. Unverified here (no GPU).
* ``engine_backend="python"``: the engine as a Python model running ONNX Runtime, for Triton builds with only the
  Python backend (the ``nvidia-pytriton`` wheel's server); same graph, same numbers as ``onnxruntime`` on CPU.

CPU threads are those of the *deployment* machine: ``target_cores`` (default: this machine's cores) split evenly
between the engine instances, or ``threads_per_instance`` as a tune record states it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

from hpi.cpu import cpu_count
from hpi.device import Device
from hpi.errors import InvalidConfigError

ENGINE_BACKENDS = ("onnxruntime", "openvino", "python")
OPENVINO_TRAP = (
    "Triton's OpenVINO backend cannot force fp32 inference (it only has a bf16 hint) and OpenVINO's CPU plugin "
    "runs bf16 by default on CPUs with AMX / AVX512-BF16; an fp32 decision is therefore never exported for the "
    "openvino backend, only a bf16 decision that passed the accuracy gate")
UNVERIFIED_GPU = "GPU repository unverified: written against Triton's onnxruntime backend documentation, not run here"

_VERSION_RE = re.compile(r"^\d+\.\d+$")
_TRT_RE = re.compile(r"^\d+(\.\d+){0,3}$")


def _positive(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidConfigError(f"{name}: expected a positive integer, got {value!r}")


@dataclass(frozen=True)
class GpuTarget:
    """The GPU a repository is written for when the exporting machine has none (``--gpu-arch``).

    No measurement and no accuracy gate can run for it here: the plan is taken from these facts, and the TensorRT
    engines are built by ONNX Runtime inside Triton on the first load of the model (for this compute capability and
    TensorRT version), then cached in ``TritonExportOptions.trt_cache_dir`` on the server.
    """

    compute_capability: str  # e.g. "8.9" (L4, RTX 40xx), "9.0" (H100)
    tensorrt_version: str | None = None  # e.g. "10.13"; None: no TensorRT, ONNX Runtime's CUDA provider only
    precision: Literal["fp32", "fp16"] = "fp32"

    def __post_init__(self) -> None:
        if not _VERSION_RE.match(str(self.compute_capability)):
            raise InvalidConfigError(f"compute_capability: expected MAJOR.MINOR such as '8.9', "
                                     f"got {self.compute_capability!r}")
        if self.tensorrt_version is not None and not _TRT_RE.match(str(self.tensorrt_version)):
            raise InvalidConfigError(f"tensorrt_version: expected a version such as '10.13', "
                                     f"got {self.tensorrt_version!r}")
        if self.precision not in ("fp32", "fp16"):
            raise InvalidConfigError(f"precision: expected 'fp32' or 'fp16', got {self.precision!r}")
        if self.precision == "fp16" and self.tensorrt_version is None:
            raise InvalidConfigError("precision 'fp16' on the GPU needs TensorRT: give tensorrt_version "
                                     "(--tensorrt-version), or use fp32")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TritonExportOptions:
    """How to lay out the repository; every default is resolved in :func:`plan_engine`."""

    max_batch_size: int = 8  # dynamic batching up to this many images per engine call
    instances: int = 1  # engine instances; on CPU the cores are split evenly between them
    layout: Literal["hpi", "paddlex"] = "hpi"
    engine_backend: str | None = None  # onnxruntime | openvino | python; None: follow the decision
    target_cores: int | None = None  # cores of the deployment machine the engines share; None: this machine's
    threads_per_instance: int | None = None  # engine threads each (a tune record's); None: target_cores / instances
    max_queue_delay_us: int = 2000  # how long Triton waits to fill a batch (hpi serve's window is 2 ms)
    preferred_batch_sizes: tuple[int, ...] = ()  # batch sizes Triton forms eagerly (dynamic_batching)
    openvino_streams: int | None = None  # NUM_STREAMS of the openvino backend; None: 1
    trt_cache_dir: str = "/tmp/hpi-trt-cache"  # on the Triton host: the TensorRT engine cache of GPU exports
    hpi_requirement: str | None = None  # the requirement line for hpi in requirements.txt; None: how it is installed
    tuned_from: str | None = None  # the tune record the batching and instance values come from

    def __post_init__(self) -> None:
        _positive("max_batch_size", self.max_batch_size)
        _positive("instances", self.instances)
        _positive("target_cores", self.target_cores, optional=True)
        _positive("threads_per_instance", self.threads_per_instance, optional=True)
        _positive("openvino_streams", self.openvino_streams, optional=True)
        if self.layout not in ("hpi", "paddlex"):
            raise InvalidConfigError(f"layout: expected 'hpi' or 'paddlex', got {self.layout!r}")
        if self.engine_backend is not None and self.engine_backend not in ENGINE_BACKENDS:
            raise InvalidConfigError(f"engine_backend: expected one of {ENGINE_BACKENDS}, got {self.engine_backend!r}")
        if not isinstance(self.max_queue_delay_us, int) or self.max_queue_delay_us < 0:
            raise InvalidConfigError(f"max_queue_delay_us: expected a non-negative integer, "
                                     f"got {self.max_queue_delay_us!r}")
        for size in self.preferred_batch_sizes:
            _positive("preferred_batch_sizes", size)
            if size > self.max_batch_size:
                raise InvalidConfigError(f"preferred_batch_sizes: {size} is larger than max_batch_size "
                                         f"{self.max_batch_size}")
        if (self.target_cores and self.threads_per_instance
                and self.instances * self.threads_per_instance > self.target_cores):
            raise InvalidConfigError(
                f"{self.instances} instance(s) x {self.threads_per_instance} thread(s) need "
                f"{self.instances * self.threads_per_instance} cores, more than target_cores={self.target_cores}")

    @property
    def cores(self) -> int:
        """The deployment machine's cores for the engines: stated, implied by a tuned split, or this machine's."""
        if self.target_cores:
            return self.target_cores
        if self.threads_per_instance:
            return self.instances * self.threads_per_instance
        return cpu_count()


@dataclass(frozen=True)
class EnginePlan:
    """What the decision becomes on Triton, and why."""

    backend: str  # Triton backend of the engine model: onnxruntime, openvino or python
    precision: str  # fp32, fp16 or bf16
    kind: Literal["KIND_CPU", "KIND_GPU"]
    instances: int
    threads_per_instance: int | None  # CPU only; instances x threads == the cores
    tensorrt: bool  # GPU: ONNX Runtime's TensorRT accelerator
    decision: str  # the selection winner's label, e.g. openvino[bf16], or the stated GPU target
    notes: tuple[str, ...] = ()  # why the plan differs from the decision, and known traps
    cores: int | None = None  # CPU: the deployment machine's cores the plan splits

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_gpu_target(target: GpuTarget, options: TritonExportOptions) -> EnginePlan:
    """The plan for a stated GPU (no local GPU, no measurement): ONNX Runtime on ``KIND_GPU``, with TensorRT when
    a TensorRT version is stated."""
    if options.engine_backend not in (None, "onnxruntime"):
        raise InvalidConfigError(f"engine_backend {options.engine_backend!r} on a GPU target: GPU repositories use "
                                 "the onnxruntime backend")
    tensorrt = target.tensorrt_version is not None
    label = (f"stated GPU sm_{target.compute_capability.replace('.', '')}"
             + (f" TensorRT {target.tensorrt_version}" if tensorrt else "") + f" [{target.precision}]")
    notes = [f"written for a stated GPU (compute capability {target.compute_capability}"
             + (f", TensorRT {target.tensorrt_version}" if tensorrt else "")
             + ") on a machine without one: no measurement and no accuracy gate ran"]
    if tensorrt:
        notes.append(f"the TensorRT engines ({target.precision.upper()}) are built by ONNX Runtime inside Triton on "
                     f"the first load of the model (minutes), then reused from {options.trt_cache_dir} on that host")
    notes.append(UNVERIFIED_GPU)
    return EnginePlan("onnxruntime", target.precision, "KIND_GPU", options.instances, None, tensorrt, label,
                      tuple(notes))


def plan_engine(decision: Any, device: Device, options: TritonExportOptions, *,
                bf16_accepted: bool = False) -> EnginePlan:
    """Map the selection winner (:class:`hpi.selection.Candidate`) to a Triton engine.

    Args:
        decision: the winning candidate (backend, precision, config).
        device: where Triton will run the engine (``KIND_GPU`` for a GPU).
        options: the export options (``engine_backend`` overrides the mapping, within the OpenVINO rule).
        bf16_accepted: whether an OpenVINO bf16 candidate passed the accuracy gate.

    Raises:
        InvalidConfigError: OpenVINO asked for without a bf16 decision (the trap), or instances that do not
            divide the cores.
    """
    label = f"{decision.backend}{'+trt' if decision.config.get('use_tensorrt') else ''}[{decision.precision}]"
    notes: list[str] = []
    if device.is_gpu:
        tensorrt = decision.precision == "fp16" or decision.backend == "tensorrt" or bool(
            decision.config.get("use_tensorrt"))
        precision = "fp16" if decision.precision == "fp16" else "fp32"
        backend = options.engine_backend or "onnxruntime"
        if backend != "onnxruntime":
            raise InvalidConfigError(f"engine_backend {backend!r} on {device}: GPU exports use the onnxruntime backend")
        if decision.backend != "onnxruntime" or tensorrt:
            notes.append(f"decision {label} exported as ONNX Runtime on the GPU"
                         + (f" with its TensorRT accelerator ({precision.upper()}, engine cache)" if tensorrt else ""))
        notes.append(UNVERIFIED_GPU)
        return EnginePlan(backend, precision, "KIND_GPU", options.instances, None, tensorrt, label, tuple(notes))

    cores = options.cores
    if options.threads_per_instance:
        per_instance = options.threads_per_instance
    elif cores % options.instances:
        divisors = [n for n in range(1, cores + 1) if cores % n == 0]
        raise InvalidConfigError(
            f"instances={options.instances} cannot share {cores} cores evenly; use one of {divisors} "
            "(or state the deployment machine's cores with target_cores / --target-cores)")
    else:
        per_instance = cores // options.instances
    if options.target_cores and options.target_cores != cpu_count():
        notes.append(f"threads set for a deployment machine of {options.target_cores} cores (this one has "
                     f"{cpu_count()})")
    if decision.backend == "openvino" and decision.precision == "bf16":
        backend, precision = "openvino", "bf16"
        notes.append("OpenVINO bf16 decision: exported for Triton's openvino backend, whose CPU plugin runs bf16 by "
                     "default on this CPU class (unverified here: the openvino backend is not in the test server)")
    else:
        backend, precision = "onnxruntime", "fp32"
        if decision.precision == "int8":
            notes.append(f"decision {label} exported for ONNX Runtime fp32: the Triton export does not write int8 "
                         "models")
        elif decision.backend == "openvino":
            notes.append(f"decision {label} exported for ONNX Runtime fp32: {OPENVINO_TRAP}")
        elif decision.backend == "paddle":
            notes.append(f"decision {label} exported for ONNX Runtime fp32: Triton has no maintained Paddle backend")
    if options.engine_backend == "openvino" and backend != "openvino":
        if not bf16_accepted:
            raise InvalidConfigError(f"engine_backend 'openvino' refused for decision {label}: {OPENVINO_TRAP}")
        backend, precision = "openvino", "bf16"
        notes.append("openvino requested: the accuracy gate accepted OpenVINO bf16 for this model")
    elif options.engine_backend == "onnxruntime" and backend != "onnxruntime":
        backend, precision = "onnxruntime", "fp32"
        notes.append("onnxruntime requested instead of the decision's backend")
    elif options.engine_backend == "python":
        backend, precision = "python", "fp32"
        notes.append("engine as a Python-backend model running ONNX Runtime fp32 (for Triton builds with only the "
                     "Python backend)")
    if options.layout == "paddlex":
        notes.append("PaddleX layout: the network runs on ONNX Runtime fp32 inside its Python model")
    elif backend == "onnxruntime":
        notes.append("Triton's onnxruntime backend: config checked against Triton's schema, not yet run by a full "
                     "Triton server here (the pytriton-bundled server lacks that backend)")
    return EnginePlan(backend, precision, "KIND_CPU", options.instances, per_instance, False, label, tuple(notes),
                      cores)
