"""The one exception tree of hpi.

Everything a user can cause (a missing file, a bad image, an unavailable backend) raises a subclass of
:class:`HpiError` whose message names the item. Bugs in hpi itself raise :class:`HpiInternalError`, which is
deliberately *not* an ``HpiError``, so that ``except HpiError`` never hides them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class HpiError(Exception):
    """Base class of every error a caller of hpi can cause or handle."""


class ModelSourceError(HpiError):
    """A model directory, file or ``inference.yml`` is missing or malformed."""


class UnknownModelError(HpiError):
    """A model name is neither in the local model store nor a directory that was given."""


class BackendUnavailableError(HpiError):
    """A backend cannot run here: a package is missing, or the device is not there."""


class ExportError(HpiError):
    """Converting a model (Paddle to ONNX, ONNX to OpenVINO IR or TensorRT) failed."""


class EngineBuildError(HpiError):
    """A backend's library refused to build or load an engine for this model (an operator or precision it does
    not support for this graph): that candidate cannot run, the others can."""


class EngineCacheError(HpiError):
    """The engine cache is unusable (unwritable directory, corrupted entry that cannot be rebuilt)."""


class StorageError(HpiError):
    """A persisted directory cannot be written, or a file in it is missing, truncated or altered.

    Attributes:
        path: the file or directory at fault.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str]) -> None:
        super().__init__(message)
        self.path = Path(path)


class InvalidInputError(HpiError):
    """An input item is unreadable or of the wrong kind, shape or dtype."""


class PredictionError(InvalidInputError):
    """Raised after every good item of a ``predict()`` call was yielded, naming each item that failed.

    ``failures`` lists them, in input order (:class:`hpi.models.base.ItemFailure`: index, input_path, error).
    """

    def __init__(self, failures: list[Any]) -> None:
        failures = sorted(failures, key=lambda f: f.index)
        self.failures = failures
        lines = "; ".join(str(f.error) for f in failures)
        super().__init__(f"{len(failures)} input(s) failed: {lines}")


class InvalidConfigError(HpiError):
    """A configuration value (device string, hpi_config, pipeline YAML) is wrong."""


class InferenceError(HpiError):
    """A backend failed while running a batch."""


class HpiInternalError(Exception):
    """A bug in hpi. Not an HpiError on purpose: report it."""
