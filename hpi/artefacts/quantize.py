"""int8 models by calibrated post-training quantisation: OpenVINO IR through NNCF, ONNX through ONNX Runtime's QDQ.

Both are built from the fp32 artefacts (:func:`hpi.artefacts.openvino.convert_ir`, :func:`hpi.artefacts.onnx.export_onnx`)
on a :class:`~hpi.calibration.CalibrationSet` preprocessed the model's own way, and stored in the engine cache
(kinds ``openvino-int8`` and ``onnx-int8``) under a key that holds the fp32 artefact's key, the calibration set's
content hash, every quantisation setting, the tool's version and :data:`RECIPE`: a changed set or setting builds a
new artefact, and a half-written one is never seen (the cache builds in a temporary directory and renames).

The settings were chosen by measuring the alternatives (``benchmarks/int8_settings.py``; speed on the seeded
PP-LCNet_x1_0 and PP-HGNetV2-B4, drift on the trained PP-LCNet document-orientation model; figures in
benchmarks/results/int8_*.md). Weights are quantised per channel and symmetrically, activations per tensor.

* NNCF: the ``performance`` preset (symmetric activations), 20-30% faster than ``mixed`` on both models and no
  less accurate; the first convolution (it sees the raw image) and the classifier head stay fp32 (an ignored
  scope), which kept every top-1 of the trained model (0.875 without) at a cost within the timing noise; fast bias
  correction (the full one moved nothing).
* ONNX Runtime: ``U8S8`` (``S8S8`` ran 3-6x slower on this AVX-512 VNNI CPU), min-max calibration (percentile and
  entropy were no better), after ORT's own pre-processing (``quant_pre_process``). Keeping the first and last
  nodes in fp32 made it slower (PP-HGNetV2-B4 16.2 against 12.8 ms) and no more accurate, so it is off. QDQ int8
  is slower than fp32 on PP-LCNet_x1_0 (depthwise convolutions and HardSwish between quantise/dequantise pairs):
  measured selection times it like every candidate, so it wins only where it is faster.

Overflow. A CPU with AVX2 but without VNNI, AVX-VNNI or AMX-INT8 multiplies uint8 activations by int8 weights with
``vpmaddubsw``, which sums each pair of products in a saturating 16-bit integer: 255 x 127 x 2 overflows it. Both
tools have the standard answer, weights quantised to 7 bits (then 255 x 63 x 2 fits): NNCF's ``OverflowFix.ENABLE``
and ONNX Runtime's ``reduce_range``. :func:`openvino_settings` and :func:`ort_settings` pick them for the CPU
(:func:`hpi.precision.int8_overflow_risk`); a CPU with int8 dot products sums in 32 bits and keeps 8-bit weights. The
choice is a setting, so it is in the artefact's key: an int8 model quantised with 7-bit weights on one CPU is never
loaded on a CPU that needs none (nor the other way round), and :func:`overflow_handling` says in the selection
record which one a candidate used.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpi.artefacts.artefact import Artefact
from hpi.artefacts.onnx import _captured_stdout, export_onnx
from hpi.artefacts.openvino import OPENVINO_FILE, convert_ir
from hpi.cache import EngineCache
from hpi.calibration import CalibrationSet
from hpi.device import Device
from hpi.errors import BackendUnavailableError, ExportError, InvalidConfigError
from hpi.models.detector_ops import (
    IM_SHAPE_INPUT,
    IMAGE_INPUT,
    SCALE_FACTOR_INPUT,
    DetectionSpec,
    prepare_image,
)
from hpi.precision import int8_overflow_risk
from hpi.source import ModelSource

logger = logging.getLogger(__name__)

RECIPE = 2  # bump when the way an int8 model is built changes: old artefacts then miss
INT8_ONNX_FILE = "model_int8.onnx"
NNCF_MISSING = "OpenVINO int8 is quantised with NNCF: pip install 'hpi[openvino]' (nncf)"


@dataclass(frozen=True)
class OpenVinoInt8Settings:
    """How NNCF quantises an OpenVINO IR (part of the artefact's key)."""

    preset: str = "performance"  # "performance": symmetric activations; "mixed": asymmetric activations
    fast_bias_correction: bool = True  # correct each layer's bias shift from int8 rounding (cheap)
    keep_first_conv: bool = True  # the first convolution stays fp32
    keep_head: bool = True  # the classifier head (the last MatMul / Convolution) stays fp32
    # NNCF's OverflowFix: "disable" (8-bit weights, for int8 dot products), "enable" (7-bit weights everywhere, for
    # AVX2 without VNNI) or "first_layer_only" (NNCF's own default); see the module's "Overflow".
    overflow_fix: str = "disable"


@dataclass(frozen=True)
class OrtInt8Settings:
    """How ONNX Runtime's ``quantize_static`` quantises an ONNX model (part of the artefact's key)."""

    activations: str = "uint8"  # "uint8" (U8S8) or "int8" (S8S8); weights are always int8
    per_channel: bool = True  # one weight scale per output channel
    method: str = "minmax"  # calibration: "minmax", "percentile" or "entropy"
    keep_first_conv: bool = False  # the first Conv stays fp32 (slower, no more accurate here: off)
    keep_head: bool = False  # the last Gemm / MatMul / Conv stays fp32 (likewise off)
    pre_process: bool = True  # ORT's quant_pre_process (shape inference, graph optimisation) first
    reduce_range: bool = False  # 7-bit weights, for AVX2 without VNNI (see the module's "Overflow")


OPENVINO_INT8 = OpenVinoInt8Settings()  # for a CPU with int8 dot products; openvino_settings() picks per CPU
ORT_INT8 = OrtInt8Settings()
OVERFLOW_FIXES = ("disable", "enable", "first_layer_only")
CPU = Device("cpu")


# For measuring what the overflow handling changes (benchmarks/precision_gate.py): "7" or "8" forces the weights'
# bits whatever the CPU; unset, the CPU decides. The setting it gives is in the artefact's key like any other.
WEIGHT_BITS_ENV = "HPI_INT8_WEIGHT_BITS"


def seven_bit_weights(device: Device = CPU) -> bool:
    """Whether int8 weights are kept to 7 bits on ``device``: where int8 sums can saturate
    (:func:`hpi.precision.int8_overflow_risk`), unless ``HPI_INT8_WEIGHT_BITS`` forces 7 or 8."""
    forced = os.environ.get(WEIGHT_BITS_ENV, "").strip()
    if forced not in ("", "7", "8"):
        raise InvalidConfigError(f"{WEIGHT_BITS_ENV}={forced!r}: expected 7 or 8 (or unset: the CPU decides)")
    return forced == "7" if forced else int8_overflow_risk(device)


def openvino_settings(device: Device = CPU) -> OpenVinoInt8Settings:
    """The NNCF settings for ``device``: :data:`OPENVINO_INT8`, with the overflow fix where int8 sums can
    saturate (:func:`seven_bit_weights`)."""
    return dataclasses.replace(OPENVINO_INT8, overflow_fix="enable") if seven_bit_weights(device) else OPENVINO_INT8


def ort_settings(device: Device = CPU) -> OrtInt8Settings:
    """ONNX Runtime's quantisation settings for ``device``: :data:`ORT_INT8`, with ``reduce_range`` (7-bit
    weights) where int8 sums can saturate (:func:`seven_bit_weights`)."""
    return dataclasses.replace(ORT_INT8, reduce_range=True) if seven_bit_weights(device) else ORT_INT8


def overflow_handling(backend: str, device: Device = CPU) -> str:
    """How ``backend``'s int8 model avoids 16-bit saturation on ``device``, in words, for the record and ``hpi
    backends``: ``7-bit weights (NNCF OverflowFix.ENABLE): no VNNI/AVX-VNNI/AMX-INT8``; "" for a backend hpi does not
    quantise."""
    risk = int8_overflow_risk(device)
    why = "no VNNI/AVX-VNNI/AMX-INT8" if risk else "int8 dot products sum in 32 bits"
    forced = os.environ.get(WEIGHT_BITS_ENV, "").strip()
    if forced:
        why += f"; forced by {WEIGHT_BITS_ENV}={forced}"
    if backend == "openvino":
        fix = openvino_settings(device).overflow_fix
        return f"{'7-bit weights' if fix == 'enable' else '8-bit weights'} (NNCF OverflowFix.{fix.upper()}): {why}"
    if backend == "onnxruntime":
        reduce = ort_settings(device).reduce_range
        return f"{'7-bit weights' if reduce else '8-bit weights'} (reduce_range={reduce}): {why}"
    return ""


def recipe(device: Device = CPU) -> dict[str, Any]:
    """How int8 models are built on ``device`` (recipe and settings, overflow handling included): part of the
    selection's decision key."""
    return {"recipe": RECIPE, "openvino": dataclasses.asdict(openvino_settings(device)),
            "onnxruntime": dataclasses.asdict(ort_settings(device))}


def first_and_last(ops: list[tuple[str, str]], first_types: tuple[str, ...], last_types: tuple[str, ...],
                   settings: Any) -> list[str]:
    """The names of the first op of ``first_types`` and the last of ``last_types`` in ``ops`` (name, type pairs in
    execution order) that ``settings`` keeps in fp32."""
    names = []
    if settings.keep_first_conv:
        names += [name for name, kind in ops if kind in first_types][:1]
    if settings.keep_head:
        names += [name for name, kind in ops if kind in last_types][-1:]
    return list(dict.fromkeys(names))


def calibration_samples(source: ModelSource, calibration: CalibrationSet, input_names: list[str]
                        ) -> list[dict[str, np.ndarray]]:
    """One feed per calibration image, keyed by the graph's ``input_names``, prepared the model's own way: a
    classifier's preprocessed image (its one input), or a detector's image with the ``scale_factor`` and
    ``im_shape`` its graph takes (:func:`hpi.models.detector_ops.prepare_image`)."""
    logger.info("calibrating %s on %s", source.name, calibration.label)
    if source.spec.task != "detection":
        data = calibration.tensors(source.spec.preprocess)
        return [{input_names[0]: data[i:i + 1]} for i in range(len(data))]
    spec = DetectionSpec.from_source(source)
    feeds = []
    for rgb in calibration.images():
        prepared = prepare_image(spec, rgb)
        feed = {IMAGE_INPUT: prepared.image[None],
                SCALE_FACTOR_INPUT: np.asarray([prepared.scale_factor], np.float32),
                IM_SHAPE_INPUT: np.asarray([prepared.im_shape], np.float32)}
        feeds.append({name: feed[name] for name in input_names})
    return feeds


def _quietly(failure: str, step: Callable[[], Any]) -> Any:
    """Run a quantisation tool's ``step`` with what it prints captured (logged at debug level: a library does not
    print) and its errors, which are plain exceptions, raised as :class:`ExportError` starting with ``failure``."""
    printed: list[str] = []
    try:
        with _captured_stdout() as lines:
            printed = lines
            return step()
    except Exception as exc:  # NNCF, ONNX and ONNX Runtime raise plain exceptions with useful messages
        raise ExportError(f"{failure}: {exc}") from exc
    finally:
        for line in printed:
            logger.debug("%s", line)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def quantize_openvino(source: ModelSource, cache: EngineCache, calibration: CalibrationSet,
                      settings: OpenVinoInt8Settings | None = None) -> Artefact:
    """The model's OpenVINO IR quantised to int8 by NNCF on ``calibration`` (cached, kind ``openvino-int8``), with
    ``settings`` (None: :func:`openvino_settings` for this CPU)."""
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    except ImportError as exc:
        raise BackendUnavailableError(NNCF_MISSING) from exc
    import openvino as ov

    settings = settings or openvino_settings()
    if settings.overflow_fix not in OVERFLOW_FIXES:
        raise ExportError(f"OpenVinoInt8Settings.overflow_fix: {settings.overflow_fix!r} not understood; "
                          f"known {', '.join(OVERFLOW_FIXES)}")

    ir = convert_ir(source, cache)
    parts = {"ir": ir.key, "calibration": calibration.key(), "settings": dataclasses.asdict(settings),
             "nncf": nncf.__version__, "openvino": ov.get_version(), "recipe": RECIPE}

    def build(out: Path) -> None:
        model = ov.Core().read_model(str(ir.path))
        feeds = calibration_samples(source, calibration, [i.get_any_name() for i in model.inputs])
        ops = [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ordered_ops()]
        keep = first_and_last(ops, ("Convolution",), ("MatMul", "Convolution"), settings)
        dataset = nncf.Dataset(feeds)
        quantized = _quietly(f"NNCF could not quantise {source.name} to int8", lambda: nncf.quantize(
            model, dataset, preset=nncf.QuantizationPreset(settings.preset), target_device=nncf.TargetDevice.CPU,
            subset_size=len(feeds), fast_bias_correction=settings.fast_bias_correction,
            ignored_scope=nncf.IgnoredScope(names=keep, validate=False) if keep else None,
            advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix(settings.overflow_fix))))
        ov.save_model(quantized, str(out / OPENVINO_FILE), compress_to_fp16=False)

    return Artefact.cached("openvino-int8", parts, cache.get_or_build("openvino-int8", parts, build), OPENVINO_FILE)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over prepared feeds, one image per batch."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._items = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_onnx(source: ModelSource, cache: EngineCache, calibration: CalibrationSet,
                  settings: OrtInt8Settings | None = None) -> Artefact:
    """The model's ONNX export with QDQ int8 nodes from ONNX Runtime's ``quantize_static`` on ``calibration``
    (cached, kind ``onnx-int8``), with ``settings`` (None: :func:`ort_settings` for this CPU)."""
    settings = settings or ort_settings()
    try:
        import onnx
        from onnxruntime import quantization as q
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise BackendUnavailableError("ONNX Runtime int8 needs onnxruntime and onnx: pip install 'hpi[onnxruntime]'") from exc

    exported = export_onnx(source, cache)
    parts = {"onnx": exported.key, "calibration": calibration.key(), "settings": dataclasses.asdict(settings),
             "onnxruntime": _version("onnxruntime"), "recipe": RECIPE}
    methods = {"minmax": q.CalibrationMethod.MinMax, "percentile": q.CalibrationMethod.Percentile,
               "entropy": q.CalibrationMethod.Entropy}
    types = {"uint8": q.QuantType.QUInt8, "int8": q.QuantType.QInt8}
    if settings.method not in methods or settings.activations not in types:
        raise ExportError(f"OrtInt8Settings: method {settings.method!r} (known {sorted(methods)}) or activations "
                          f"{settings.activations!r} (known {sorted(types)}) not understood")

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="hpi-quant-") as tmp:
            model_in = exported.path
            if settings.pre_process:
                model_in = Path(tmp) / "pre.onnx"
                # ONNX's shape inference: ORT's symbolic one gives up on paddle2onnx's dynamic-batch Reshapes.
                _quietly(f"ONNX Runtime's quantisation pre-processing failed on {source.name}",
                         lambda: quant_pre_process(str(exported.path), str(model_in), skip_symbolic_shape=True))
            model = onnx.load(str(model_in))
            ops = [(node.name, node.op_type) for node in model.graph.node]
            keep = first_and_last(ops, ("Conv",), ("Gemm", "MatMul", "Conv"), settings)
            initializers = {t.name for t in model.graph.initializer}
            feeds = calibration_samples(source, calibration,
                                        [i.name for i in model.graph.input if i.name not in initializers])
            _quietly(f"ONNX Runtime could not quantise {source.name} to int8", lambda: q.quantize_static(
                str(model_in), str(out / INT8_ONNX_FILE), _Reader(feeds),
                quant_format=q.QuantFormat.QDQ, per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                activation_type=types[settings.activations], weight_type=q.QuantType.QInt8,
                calibrate_method=methods[settings.method], nodes_to_exclude=keep,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": settings.activations == "int8"}))

    return Artefact.cached("onnx-int8", parts, cache.get_or_build("onnx-int8", parts, build), INT8_ONNX_FILE)
