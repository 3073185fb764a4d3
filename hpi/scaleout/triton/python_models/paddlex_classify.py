"""Triton Python model in PaddleX's high-stability-serving layout: ``image-classification``, one JSON request in
(``input``, BYTES) and one JSON response out (``output``, BYTES), bodies as in PaddleX's serving protocol.

Request: ``{"image": <Base64 image>, "topk": <int, optional>, "visualize": <bool, optional>}``. Response:
``{"logId", "errorCode", "errorMsg", "result": {"categories": [{"id", "name", "score"}], "image"}}``; a bad request
answers with its HTTP-style ``errorCode`` (400, 403, 422) instead of failing the Triton request, as PaddleX does.
Image URLs are refused (403): a server that fetches any URL is an SSRF hole.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid

import numpy as np
import triton_python_backend_utils as pb_utils

from hpi.errors import HpiError
from hpi.preprocess.decode import decode_image
from hpi.scaleout.triton.python_models.runtime import (
    load_labels,
    make_preprocessor,
    onnx_session,
    parameters,
    top_k,
    version_dir,
)
from hpi.serving.classification import draw_labels_jpeg


class RequestError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        here = version_dir(args)
        self.kernel = make_preprocessor(params)
        self.session = onnx_session(os.path.join(here, "model.onnx"), int(params["intra_op_thread_count"]))
        self.input_name = self.session.get_inputs()[0].name
        self.labels = load_labels(os.path.join(here, "labels.json"))
        self.default_topk = int(params["topk"])
        self.jpeg_quality = int(params.get("jpeg_quality", "75"))

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "input").as_numpy().reshape(-1)[0]
            log_id = str(uuid.uuid4())
            try:
                body = {"logId": log_id, "errorCode": 0, "errorMsg": "Success", "result": self._classify(raw)}
            except RequestError as exc:
                body = {"logId": log_id, "errorCode": exc.code, "errorMsg": str(exc)}
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("output", np.array([[data]], np.object_))]))
        return responses

    def _classify(self, raw):
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise RequestError(422, f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise RequestError(422, "image: expected a Base64-encoded image string")
        topk = body.get("topk") or self.default_topk
        if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
            raise RequestError(422, f"topk: expected a positive integer, got {topk!r}")
        text = body["image"]
        if text.startswith(("http://", "https://")):
            raise RequestError(403, "image: URLs are not fetched by this server; send the image as Base64")
        try:
            data = base64.b64decode(text, validate=True)
            rgb = decode_image(data, "image")
        except (binascii.Error, ValueError) as exc:
            raise RequestError(400, f"image: not valid Base64 ({exc})") from exc
        except HpiError as exc:
            raise RequestError(400, str(exc)) from exc
        done = self.kernel.process([rgb], ["image"])
        if done.errors:
            raise RequestError(400, str(done.errors[0].error))
        row = self.session.run(None, {self.input_name: done.batch})[0][0].reshape(-1)
        ids = top_k(row, min(topk, row.shape[-1]))
        names = [self.labels[i] for i in ids]
        scores = [round(float(row[i]), 5) for i in ids]
        categories = [{"id": int(i), "name": n, "score": s} for i, n, s in zip(ids, names, scores)]
        image = None
        if body.get("visualize", True):
            lines = [f"{name.split(',')[0]} {score:.2f}" for name, score in zip(names, scores)]
            if all(line.isascii() for line in lines):
                image = draw_labels_jpeg(np.ascontiguousarray(rgb[:, :, ::-1]), lines, self.jpeg_quality)
        return {"categories": categories, "image": image}

    def finalize(self):
        self.kernel.close()
