"""Triton Python model: encoded image bytes to the engine's input tensor, with hpi's decoder and resize.

A request whose image cannot be decoded gets an error response naming it; the other requests of the batch go on.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from hpi.scaleout.triton.python_models.runtime import make_preprocessor, parameters


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        self.kernel = make_preprocessor(params)
        self.output_name = params["output_name"]

    def execute(self, requests):
        # Every image of every request in one kernel call: hpi decodes and resizes them on its thread pool.
        payloads, owner = [], []
        for r, request in enumerate(requests):
            blobs = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
            payloads += [bytes(b) for b in blobs]
            owner += [r] * len(blobs)
        done = self.kernel.process(payloads, [f"request {owner[i]} image {i}" for i in range(len(payloads))])
        failed = {}
        for err in done.errors:
            failed.setdefault(owner[err.index], []).append(str(err.error))
        rows = dict(zip(done.indices, done.batch))
        responses = []
        for r in range(len(requests)):
            if r in failed:
                responses.append(pb_utils.InferenceResponse(output_tensors=[],
                                                            error=pb_utils.TritonError("; ".join(failed[r]))))
                continue
            batch = np.stack([rows[i] for i, o in enumerate(owner) if o == r])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, batch)]))
        return responses

    def finalize(self):
        self.kernel.close()
