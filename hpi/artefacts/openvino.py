"""OpenVINO artefacts: the IR converted from the ONNX export, and compiled models exported as blobs.

The IR (``model.xml`` + ``model.bin``, kind ``openvino``) keeps fp32 weights: precision is chosen when compiling.
A compiled model is stored as its own entry (kind ``openvino-compiled``, one per IR, folding, batch and compile
properties) through ``CompiledModel.export_model`` and loaded with ``Core.import_model``. OpenVINO's own
``CACHE_DIR`` is not used: it writes blobs into a directory whenever a new shape is compiled, outside the cache's
lock and after its manifest is sealed.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hpi.artefacts.artefact import Artefact
from hpi.artefacts.onnx import DEFAULT_OPSET, export_onnx
from hpi.cache import EngineCache
from hpi.errors import BackendUnavailableError, ExportError
from hpi.source import ModelSource

logger = logging.getLogger(__name__)

OPENVINO_FILE = "model.xml"
BLOB_FILE = "compiled.blob"
COMPILED_KIND = "openvino-compiled"


def _import_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError("the openvino backend needs openvino: pip install 'hpi[openvino]'") from exc
    return ov


def convert_ir(source: ModelSource, cache: EngineCache, *, opset: int = DEFAULT_OPSET) -> Artefact:
    """The model as OpenVINO IR, converted from its ONNX export and cached (kind ``openvino``).

    Weights stay fp32 in the IR (``compress_to_fp16=False``): precision is chosen when compiling, not here.
    """
    ov = _import_openvino()
    exported = export_onnx(source, cache, opset=opset)
    onnx_file = exported.path
    parts = {"onnx": exported.key, "tool": "openvino", "version": ov.get_version()}

    def build(out: Path) -> None:
        onnx_to_ir(onnx_file, out)

    return Artefact.cached("openvino", parts, cache.get_or_build("openvino", parts, build), OPENVINO_FILE)


def onnx_to_ir(onnx_file: Path, out: Path) -> Path:
    """Convert an ONNX file to OpenVINO IR (``out/model.xml`` + ``model.bin``, fp32 weights); the one converter,
    used by the engine cache and by the Triton export.

    Raises:
        BackendUnavailableError: openvino is not installed.
        ExportError: OpenVINO could not convert the graph (its message included).
    """
    ov = _import_openvino()
    try:
        model = ov.convert_model(str(onnx_file))
        ov.save_model(model, str(out / OPENVINO_FILE), compress_to_fp16=False)
    except Exception as exc:  # openvino raises RuntimeError / OpConversionFailure with a useful message
        raise ExportError(f"OpenVINO could not convert {onnx_file}: {exc}") from exc
    return out / OPENVINO_FILE


def openvino_ir_path(source: ModelSource, cache: EngineCache, *, opset: int = DEFAULT_OPSET) -> Path:
    """The file of :func:`convert_ir`."""
    return convert_ir(source, cache, opset=opset).path


def compile_cached(core: Any, compile_model: Callable[[], Any], cache: EngineCache,
                   parts: Mapping[str, Any], properties: Mapping[str, Any], device_name: str = "CPU") -> Any:
    """A compiled model: imported from its cached blob, or compiled, exported into a new entry and returned.

    Args:
        core: the ``openvino.Core`` that imports the blob.
        compile_model: compiles the model (only called when the blob is not cached).
        cache: the engine cache.
        parts: what determines the compiled model besides ``properties`` (IR key, folding, batch, device
            signature, OpenVINO version).
        properties: the compile properties; part of the key, and passed again when importing.
    """
    key_parts = {**parts, "properties": {k: str(v) for k, v in sorted(properties.items())}}
    compiled: list[Any] = []

    def build(out: Path) -> None:
        model = compile_model()
        (out / BLOB_FILE).write_bytes(model.export_model().getvalue())  # a BytesIO
        compiled.append(model)

    entry = cache.get_or_build(COMPILED_KIND, key_parts, build)
    if compiled:  # built just now: the compiled model is at hand
        return compiled[0]
    return core.import_model(io.BytesIO((entry / BLOB_FILE).read_bytes()), device_name, dict(properties))
