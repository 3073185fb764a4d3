"""Triton Python-backend model sources that ``hpi export --format triton`` copies into a model repository.

Each ``*_model.py`` becomes one model's ``<version>/model.py``; :mod:`runtime` and a copy of hpi's decoder and
preprocessing modules (``hpi/errors.py`` and ``hpi/preprocess/``) are copied beside it, so the repository runs on
any Triton with the Python backend and numpy, OpenCV (and ONNX Runtime for the models that run the network).
These modules import ``triton_python_backend_utils``, which only exists inside Triton: hpi never imports them.
"""
