"""Triton Python model: the engine's class scores to PaddleX's top-k result (class ids, scores, label names)."""

from __future__ import annotations

import os

import numpy as np
import triton_python_backend_utils as pb_utils

from hpi.scaleout.triton.python_models.runtime import load_labels, parameters, top_k, version_dir


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        self.input_name = params["input_name"]
        self.k = int(params["topk"])
        self.labels = load_labels(os.path.join(version_dir(args), "labels.json"))

    def execute(self, requests):
        responses = []
        for request in requests:
            scores = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            scores = scores.reshape(len(scores), -1)
            ids = np.stack([top_k(row, self.k) for row in scores]).astype(np.int64)
            top = np.take_along_axis(scores, ids, axis=1).astype(np.float32)
            names = np.array([[self.labels[i].encode("utf-8") for i in row] for row in ids], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("CLASS_IDS", ids), pb_utils.Tensor("SCORES", top), pb_utils.Tensor("LABEL_NAMES", names),
            ]))
        return responses
