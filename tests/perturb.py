"""Broken conversions of trained weights, for showing the accuracy gate reject them: an ONNX copy of a model with
one weight moved, or with seeded noise on every weight tensor (tests and benchmarks/precision_gate.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from hpi.source import ModelSource


def perturbed_copy(onnx_path: Path, config_file: Path, out: Path, *, one_weight: float | None = None,
                   noise: float | None = None, seed: int = 0) -> ModelSource:
    """A model directory at ``out``: the ONNX model at ``onnx_path`` with its weights changed, and ``config_file``
    as its ``inference.yml``. ``one_weight``: the first weight tensor's first value moves by this fraction of the
    tensor's largest absolute value (a conversion that got one number wrong). ``noise``: every weight tensor (2 or
    more dimensions) gets N(0, noise x its standard deviation), seeded (a conversion whose answers change)."""
    import onnx
    from onnx import numpy_helper

    if (one_weight is None) == (noise is None):
        raise ValueError("give exactly one of one_weight, noise")
    model = onnx.load(str(onnx_path))
    tensors = [t for t in model.graph.initializer if len(t.dims) >= 2]
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
                if a.name == "value" and len(a.t.dims) >= 2]
    if not tensors:
        raise ValueError(f"{onnx_path}: no weight tensor to perturb")
    rng = np.random.default_rng(seed)
    for tensor in tensors[:1] if one_weight is not None else tensors:
        original = numpy_helper.to_array(tensor)
        values = original.astype(np.float32)
        if one_weight is not None:
            values.flat[0] += one_weight * float(np.abs(values).max())
        else:
            values = values + rng.normal(0, noise * float(values.std()), values.shape).astype(np.float32)
        tensor.CopyFrom(numpy_helper.from_array(values.astype(original.dtype), tensor.name))
    out.mkdir(parents=True)
    onnx.save(model, str(out / "inference.onnx"))
    shutil.copy(config_file, out / "inference.yml")
    return ModelSource.from_path(out)
