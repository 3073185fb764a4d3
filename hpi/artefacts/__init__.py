"""Building artefacts a backend loads: ONNX exports, OpenVINO IR, TensorRT plans, each through the engine cache.

Builders return an :class:`~hpi.artefacts.artefact.Artefact` (its cache kind, key, key parts and file); backends only
load and run what they are given. One module per target: :mod:`hpi.artefacts.onnx`, :mod:`hpi.artefacts.openvino`,
:mod:`hpi.artefacts.tensorrt` (with :mod:`hpi.artefacts.fp16` for fp16 copies of ONNX models), and
:mod:`hpi.artefacts.runtime_cache` for caches that a runtime fills itself (TensorRT engines of ONNX Runtime and Paddle).
"""
