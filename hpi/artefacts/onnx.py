"""ONNX artefacts: a Paddle model exported with paddle2onnx, and the ONNX model with preprocessing folded in.

Both go through the engine cache (kinds ``onnx`` and ``onnx-folded``); an ONNX source is used as is. Every later
build (OpenVINO IR, TensorRT plans, ONNX Runtime's TensorRT engines) keys on :attr:`Artefact.key` of the ONNX file
it is fed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpi.artefacts.artefact import SOURCE_KIND, Artefact
from hpi.cache import EngineCache
from hpi.errors import BackendUnavailableError, ExportError
from hpi.source import ModelSource

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17  # HardSwish and LayerNormalization exist from here on; OpenVINO fuses them (PLATFORM-FACTS)
ONNX_FILE = "model.onnx"
FOLDED_ONNX_FILE = "model_u8.onnx"
ONNX_MISSING = "onnx is not installed (pip install onnx)"


@contextlib.contextmanager
def _captured_stdout() -> Iterator[list[str]]:
    """Capture what converters print: C++ code writes to file descriptor 1 and paddle2onnx's Python logger to
    ``sys.stdout``; a library must not print, so both are collected (and searched for errors) instead."""
    lines: list[str] = []
    sys.stdout.flush()
    saved = os.dup(1)
    text = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            with contextlib.redirect_stdout(text):
                yield lines
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())
            lines.extend(text.getvalue().splitlines())


def export_onnx(source: ModelSource, cache: EngineCache, *, opset: int = DEFAULT_OPSET) -> Artefact:
    """The model as an ONNX file: the source itself if it is ONNX, else a cached paddle2onnx export."""
    if source.format == "onnx":
        return Artefact(SOURCE_KIND, source.content_hash, source.model_file, {"model": source.content_hash})
    try:
        import paddle2onnx
    except ImportError as exc:
        raise BackendUnavailableError("exporting a Paddle model to ONNX needs paddle2onnx: pip install 'hpi[paddle]'") from exc
    parts = {"model": source.content_hash, "tool": "paddle2onnx", "version": paddle2onnx.__version__, "opset": opset}

    def build(out: Path) -> None:
        logger.info("exporting %s to ONNX (paddle2onnx %s, opset %d)", source.name, paddle2onnx.__version__, opset)
        with _captured_stdout() as log:
            try:
                # save_file=None returns the bytes and skips paddle2onnx's own optimiser step, which pip-installs
                # packages at run time.
                data = paddle2onnx.export(
                    str(source.model_file),
                    str(source.params_file),
                    save_file=None,
                    opset_version=opset,
                    auto_upgrade_opset=True,
                    enable_onnx_checker=True,
                    enable_optimize=True,
                )
            except Exception as exc:  # paddle2onnx raises bare Exceptions (or UnboundLocalError after logging)
                data, error = None, exc
            else:
                error = None
        if not isinstance(data, bytes) or not data:
            detail = "; ".join(line for line in log if "rror" in line) or str(error)
            raise ExportError(f"paddle2onnx could not convert {source.model_file}: {detail}") from error
        import onnx

        model = onnx.load_from_string(data)
        repaired = repair_shape_concats(model)
        if repaired:
            logger.info("repaired %d scalar shape concatenation(s) in the paddle2onnx output", repaired)
            data = model.SerializeToString()
        actual_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        (out / ONNX_FILE).write_bytes(data)
        (out / "export.json").write_text(
            json.dumps({"paddle2onnx": paddle2onnx.__version__, "opset": actual_opset, "source": source.name,
                        "repaired_shape_concats": repaired}),
            encoding="utf-8",
        )

    return Artefact.cached("onnx", parts, cache.get_or_build("onnx", parts, build), ONNX_FILE)


def onnx_path(source: ModelSource, cache: EngineCache, *, opset: int = DEFAULT_OPSET) -> Path:
    """The file of :func:`export_onnx`."""
    return export_onnx(source, cache, opset=opset).path


def repair_shape_concats(model) -> int:  # noqa: ANN001 - onnx.ModelProto
    """Make every input of a Concat that builds a Reshape target shape one-dimensional.

    paddle2onnx 2.1 translates old-format programs (``inference.pdmodel``) so that ``reshape(x, [N, -1])``
    concatenates a *scalar* batch size (Squeeze of a one-element Slice of Shape) with a 1-D constant, which ONNX
    forbids ("axis must be in [-rank, rank-1]"). A Reshape's shape input is 1-D by definition, so flattening each
    of that Concat's inputs with ``Reshape(input, [-1])`` is a no-op for correct inputs and repairs scalar ones.
    Returns the number of Concat nodes changed.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    shape_targets = {node.input[1] for node in graph.node if node.op_type == "Reshape" and len(node.input) > 1}
    flat_name = "hpi_repair_flat_shape"
    changed = 0
    new_nodes = []
    for node in graph.node:
        concat = node if node.op_type == "Concat" and node.output[0] in shape_targets else None
        if concat is not None:
            for i, name in enumerate(list(concat.input)):
                if producers.get(name) is not None and producers[name].op_type == "Constant":
                    continue
                flat = f"{name}_hpi_1d"
                new_nodes.append(helper.make_node("Reshape", [name, flat_name], [flat], name=f"hpi_repair_{flat}"))
                concat.input[i] = flat
                changed += 1
        new_nodes.append(node)
    if changed:
        graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), flat_name))
        del graph.node[:]
        graph.node.extend(new_nodes)
        onnx.checker.check_model(model)
    return changed


def fold_onnx(source: ModelSource, cache: EngineCache, *, opset: int = DEFAULT_OPSET, base: Artefact | None = None
              ) -> Artefact:
    """The ONNX model (or ``base``, an ONNX artefact built from it, such as its int8 copy) with its normalisation
    and layout folded in: input uint8 NHWC RGB (cached)."""
    from hpi.preprocess.graph import fold_into_onnx

    spec = source.spec.preprocess
    if spec is None:
        raise ExportError(f"{source.name}: no classification preprocessing to fold into the graph")
    exported = base or export_onnx(source, cache, opset=opset)
    onnx_file = exported.path
    parts = {"onnx": exported.key, "fold": repr(spec), "tool": "hpi.preprocess.graph", "version": 1}

    def build(out: Path) -> None:
        import onnx

        folded = fold_into_onnx(onnx.load(str(onnx_file)), spec)
        onnx.save(folded, str(out / FOLDED_ONNX_FILE))

    return Artefact.cached("onnx-folded", parts, cache.get_or_build("onnx-folded", parts, build), FOLDED_ONNX_FILE)


def folded_onnx_path(source: ModelSource, cache: EngineCache, *, opset: int = DEFAULT_OPSET) -> Path:
    """The file of :func:`fold_onnx`."""
    return fold_onnx(source, cache, opset=opset).path


def model_onnx(source: ModelSource, cache: EngineCache, *, fold_preprocess: bool = False,
               base: Artefact | None = None) -> Artefact:
    """The ONNX file a backend is fed: the export, or ``base`` (an ONNX artefact built from it), folded (uint8
    NHWC input) or plain."""
    if fold_preprocess:
        return fold_onnx(source, cache, base=base)
    return base or export_onnx(source, cache)


def onnx_inputs(model: Any) -> list[tuple[str, list[int | None]]]:
    """The real inputs (initializers excluded) of an ONNX model or file: name and dims, None where symbolic."""
    if isinstance(model, str | os.PathLike):
        try:
            import onnx
        except ImportError as exc:
            raise BackendUnavailableError(ONNX_MISSING) from exc
        model = onnx.load(str(model), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        out.append((value.name, [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]))
    return out
