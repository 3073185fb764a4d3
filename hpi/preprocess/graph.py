"""Preprocessing folded into the model graph: the model takes uint8 NHWC RGB, the CPU only decodes and resizes.

The cast to float, ``x * scale / std - mean / std`` and the NHWC to NCHW transpose move into the graph, where the
runtime fuses them with the first layers and runs them on the model's threads (or the GPU):

* :func:`fold_into_onnx` prepends ``Transpose -> Cast -> Mul -> Add`` to an ONNX model (for ONNX Runtime and
  TensorRT). It multiplies by ``scale / std`` and adds ``-mean / std`` in float32, the operations PaddleX's
  ``Normalize`` performs, so ONNX Runtime reproduces the reference tensor exactly.
* :func:`fold_into_openvino` does the same with OpenVINO's ``PrePostProcessor`` (``mean`` then ``scale``, which
  OpenVINO may fold into the first convolution: equal to the reference up to float32 rounding).
* :class:`ResizeCropU8` is the CPU half: images to a uint8 NHWC RGB batch (resize and crop only).

ONNX and OpenVINO are imported only when a function needs them, so ``import hpi.preprocess.graph`` works without.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from hpi.errors import ExportError
from hpi.preprocess.fused import BatchKernel, PreparedImage, PreprocessedBatch
from hpi.preprocess.spec import PreprocessSpec

if TYPE_CHECKING:
    import onnx

# Metadata key written into a folded ONNX model; a second fold of the same model is refused.
FOLDED_METADATA_KEY = "hpi.preprocess_folded"

__all__ = ["FOLDED_METADATA_KEY", "PreprocessedBatch", "ResizeCropU8", "fold_into_onnx", "fold_into_openvino"]


class ResizeCropU8(BatchKernel):
    """The CPU half of in-graph preprocessing: images to a uint8 (N, H, W, 3) RGB batch, resized and cropped.

    Same API, threading and per-item errors as :class:`hpi.preprocess.fused.FusedPreprocessor`
    (``__call__`` for RGB arrays, ``process`` / ``preprocess_encoded`` for bytes with per-item errors). The pixels
    equal the reference chain's uint8 crop exactly.

    Example:
        >>> folded = fold_into_onnx(onnx.load("model.onnx"), spec)
        >>> session = onnxruntime.InferenceSession(folded.SerializeToString())
        >>> with ResizeCropU8(spec, threads=2) as cpu:
        ...     logits = session.run(None, {"image": cpu(rgb_images)})[0]
    """

    dtype = np.uint8

    def _row_shape(self, width: int, height: int) -> tuple[int, ...]:
        return (height, width, 3)

    def _write(self, prepared: PreparedImage, row: np.ndarray) -> None:
        crop = self._resized_crop(prepared)
        if prepared.order == "BGR":
            result = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB, dst=row)
            if result is not row:
                np.copyto(row, result)
        else:
            np.copyto(row, crop)


def fold_into_onnx(
    model: onnx.ModelProto,
    spec: PreprocessSpec,
    *,
    input_name: str | None = None,
    new_input_name: str = "image",
) -> onnx.ModelProto:
    """A copy of ``model`` whose input is a uint8 NHWC RGB batch, with cast, normalisation and layout inside.

    The new input keeps the original batch dimension (a ``dim_param`` stays dynamic) and takes the spatial size
    from the original input, or from the spec's output size where the original is dynamic. The original input
    becomes an internal tensor, so every node that read it is unchanged.

    Args:
        model: an ONNX model with one image input, float32, NCHW (``spec.channels_first``) or NHWC.
        spec: the preprocessing whose normalisation to fold (resize and crop stay on the CPU).
        input_name: which graph input to replace; the only non-initializer input when None.
        new_input_name: name of the new uint8 input.

    Returns:
        The folded model (the argument is not modified).

    Raises:
        ExportError: the model has no single float32 4-D image input, the sizes disagree with the spec, the
            opset is older than 7, the name is taken, or the model was folded already.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if any(p.key == FOLDED_METADATA_KEY for p in model.metadata_props):
        raise ExportError("model already has folded preprocessing (metadata key hpi.preprocess_folded)")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 7:
        raise ExportError(f"folding needs ONNX opset 7 or newer (broadcasting Mul/Add), model has {opset}")

    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    initializers = {t.name for t in graph.initializer}
    candidates = [i for i in graph.input if i.name not in initializers]
    if input_name is None:
        if len(candidates) != 1:
            raise ExportError(
                f"model has {len(candidates)} inputs ({', '.join(i.name for i in candidates)}); pass input_name"
            )
        original = candidates[0]
    else:
        matches = [i for i in candidates if i.name == input_name]
        if not matches:
            raise ExportError(
                f"no graph input named {input_name!r}; available: {', '.join(i.name for i in candidates)}"
            )
        original = matches[0]

    tensor_type = original.type.tensor_type
    if tensor_type.elem_type != TensorProto.FLOAT:
        raise ExportError(
            f"input {original.name!r}: expected float32, got {TensorProto.DataType.Name(tensor_type.elem_type)}"
        )
    dims = list(tensor_type.shape.dim)
    if len(dims) != 4:
        raise ExportError(f"input {original.name!r}: expected a 4-D image batch, got rank {len(dims)}")
    c_dim, h_dim, w_dim = (dims[1], dims[2], dims[3]) if spec.channels_first else (dims[3], dims[1], dims[2])
    layout = "NCHW" if spec.channels_first else "NHWC"
    if c_dim.HasField("dim_value") and c_dim.dim_value != 3:
        raise ExportError(f"input {original.name!r}: expected 3 channels ({layout}), got {c_dim.dim_value}")
    size = spec.output_size
    spatial = []
    for dim, axis, want in ((h_dim, "height", size and size[1]), (w_dim, "width", size and size[0])):
        if dim.HasField("dim_value"):
            if want and dim.dim_value != want:
                raise ExportError(
                    f"input {original.name!r}: model {axis} is {dim.dim_value} but preprocessing produces {want}"
                )
            spatial.append(dim.dim_value)
        else:
            spatial.append(want or (dim.dim_param or axis))

    taken = {v.name for v in graph.input} | {v.name for v in graph.output} | initializers
    taken |= {name for node in graph.node for name in node.output}
    if new_input_name in taken:
        raise ExportError(f"new_input_name {new_input_name!r} is already a tensor name in the model")
    prefix = _unique_prefix(taken, "hpi_pre")

    batch = dims[0]
    batch_dim: Any = batch.dim_value if batch.HasField("dim_value") else (batch.dim_param or "batch")
    new_input = helper.make_tensor_value_info(
        new_input_name, TensorProto.UINT8, [batch_dim, spatial[0], spatial[1], 3]
    )
    # The same float32 constants as PaddleX's Normalize: alpha = scale / std, beta = -mean / std.
    bshape = (1, 3, 1, 1) if spec.channels_first else (1, 1, 1, 3)
    alpha = np.array([spec.scale / s for s in spec.std], np.float32).reshape(bshape)
    beta = np.array([-m / s for m, s in zip(spec.mean, spec.std)], np.float32).reshape(bshape)
    graph.initializer.extend(
        [numpy_helper.from_array(alpha, f"{prefix}_alpha"), numpy_helper.from_array(beta, f"{prefix}_beta")]
    )
    nodes = []
    current = new_input_name
    if spec.channels_first:  # transpose the uint8 tensor: a quarter of the bytes of transposing float32
        nodes.append(helper.make_node("Transpose", [current], [f"{prefix}_nchw"], perm=[0, 3, 1, 2],
                                      name=f"{prefix}_transpose"))
        current = f"{prefix}_nchw"
    nodes += [
        helper.make_node("Cast", [current], [f"{prefix}_float"], to=TensorProto.FLOAT, name=f"{prefix}_cast"),
        helper.make_node("Mul", [f"{prefix}_float", f"{prefix}_alpha"], [f"{prefix}_scaled"], name=f"{prefix}_mul"),
        helper.make_node("Add", [f"{prefix}_scaled", f"{prefix}_beta"], [original.name], name=f"{prefix}_add"),
    ]

    # The original input becomes an internal tensor written by the last prefix node.
    kept_inputs = [i for i in graph.input if i.name != original.name]
    internal = onnx.ValueInfoProto()
    internal.CopyFrom(original)
    del graph.input[:]
    graph.input.extend([new_input, *kept_inputs])
    if not any(v.name == original.name for v in graph.value_info):
        graph.value_info.append(internal)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    folded.metadata_props.append(
        onnx.StringStringEntryProto(
            key=FOLDED_METADATA_KEY,
            value=f"input={new_input_name} uint8 NHWC RGB -> {original.name} float32 {layout}; "
            f"mean={list(spec.mean)} std={list(spec.std)} scale={spec.scale}",
        )
    )
    try:
        onnx.checker.check_model(folded)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"folded model does not validate: {exc}") from exc
    return folded


def fold_into_openvino(ov_model: Any, spec: PreprocessSpec, *, input_name: str | None = None) -> Any:
    """``ov_model`` with OpenVINO's PrePostProcessor taking uint8 NHWC RGB and doing cast, mean/std and layout.

    The batch dimension stays as it was (dynamic stays dynamic). OpenVINO modifies and returns the same
    ``openvino.Model`` object: pass a clone when the original is still needed.

    Args:
        ov_model: an ``openvino.Model`` (from ``openvino.Core().read_model`` or ``openvino.convert_model``).
        spec: the preprocessing whose normalisation to fold.
        input_name: which input to replace; the only input when None.

    Raises:
        ExportError: the model does not have exactly one input (and no ``input_name``), or OpenVINO refuses the
            preprocessing steps.
    """
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    inputs = ov_model.inputs
    if input_name is None and len(inputs) != 1:
        names = ", ".join(i.get_any_name() for i in inputs)
        raise ExportError(f"model has {len(inputs)} inputs ({names}); pass input_name")
    try:
        ppp = PrePostProcessor(ov_model)
        inp = ppp.input() if input_name is None else ppp.input(input_name)
        inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        inp.model().set_layout(ov.Layout("NCHW" if spec.channels_first else "NHWC"))
        # (x - mean / scale) / (std / scale) == x * scale / std - mean / std
        inp.preprocess().convert_element_type(ov.Type.f32).mean([m / spec.scale for m in spec.mean]).scale(
            [s / spec.scale for s in spec.std]
        )
        return ppp.build()
    except (RuntimeError, ValueError) as exc:
        raise ExportError(f"OpenVINO could not fold the preprocessing: {exc}") from exc


def _unique_prefix(taken: set[str], base: str) -> str:
    prefix, k = base, 0
    while any(name.startswith(prefix) for name in taken):
        k += 1
        prefix = f"{base}{k}"
    return prefix
