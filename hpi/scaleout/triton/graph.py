"""The exported ONNX graph's one input and one output, as Triton declares them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpi.errors import ExportError

_ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64",
                   10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}


@dataclass(frozen=True)
class GraphIO:
    """The exported graph's one input and one output, as Triton sees them (batch dimension dropped)."""

    input_name: str
    input_type: str
    input_dims: tuple[int, ...]
    output_name: str
    output_type: str
    output_dims: tuple[int, ...]


def graph_io(onnx_file: Path) -> GraphIO:
    """Names, Triton dtypes and dims (without the batch axis; -1 where dynamic) of an ONNX classifier.

    Raises:
        ExportError: not one input and one output, a fixed batch dimension, or a dtype Triton has no name for.
    """
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ExportError(f"{onnx_file}: expected one input and one output, got {len(inputs)} and {len(graph.output)}")

    def describe(value: Any) -> tuple[str, tuple[int, ...]]:
        ttype = value.type.tensor_type
        if ttype.elem_type not in _ONNX_TO_TRITON:
            raise ExportError(f"{onnx_file}: tensor {value.name!r} has ONNX type {ttype.elem_type}, which Triton lacks")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
        if not dims or dims[0] != -1:
            raise ExportError(f"{onnx_file}: tensor {value.name!r} has a fixed batch dimension {dims[:1]}; "
                              "dynamic batching needs a dynamic one")
        return _ONNX_TO_TRITON[ttype.elem_type], tuple(dims[1:])

    in_type, in_dims = describe(inputs[0])
    out_type, out_dims = describe(graph.output[0])
    return GraphIO(inputs[0].name, in_type, in_dims, graph.output[0].name, out_type, out_dims)
