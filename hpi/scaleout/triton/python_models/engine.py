"""Triton Python model: the exported ONNX graph on ONNX Runtime, for Triton builds without the onnxruntime
backend (the ``nvidia-pytriton`` wheel ships only the Python backend). Requests of a dynamic batch run in one
session call."""

from __future__ import annotations

import os

import numpy as np
import triton_python_backend_utils as pb_utils

from hpi.scaleout.triton.python_models.runtime import onnx_session, parameters, version_dir


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        self.session = onnx_session(os.path.join(version_dir(args), "model.onnx"), int(params["intra_op_thread_count"]))
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        outputs = self.session.run(self.output_names, {self.input_name: np.concatenate(arrays)})
        responses, start = [], 0
        for array in arrays:
            stop = start + len(array)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, np.ascontiguousarray(out[start:stop])) for name, out in zip(self.output_names, outputs)]))
            start = stop
        return responses
