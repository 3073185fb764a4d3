"""A real Triton server for the tests: the ``nvidia-pytriton`` wheel's ``tritonserver`` (Python backend only) from
its own virtual environment, with hpi installed into it from this checkout the way a user installs a repository's
``requirements.txt`` (:func:`hpi.scaleout.triton.environment.server_environment`).

``nvidia-pytriton`` pins numpy<2, so it cannot share hpi's environment. The venv lives at ``$HPI_PYTRITON_VENV``
(so CI can cache it), else where ``hpi triton serve`` keeps its own; a stamp records what was installed, so an
unchanged venv is reused and a changed hpi is reinstalled. A venv that cannot be created is an error (the test
fails); only an unsupported platform skips, saying why.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hpi.scaleout.triton.environment import (
    REQUIREMENTS_FILE,
    default_venv,
    requirements_text,
    server_environment,
    unsupported_reason,
)
from hpi.scaleout.triton.server import TritonServer as _TritonServer
from tests.conftest import free_port

__all__ = ["TritonServer", "ensure_venv", "parse_config", "unsupported_reason", "venv_path"]


def venv_path() -> Path:
    override = os.environ.get("HPI_PYTRITON_VENV")
    return Path(override) if override else default_venv()


def ensure_venv(repository: Path | None = None) -> Path:
    """The venv with the server and ``repository``'s requirements (hpi from this checkout among them); without a
    repository, what an ``--engine-backend python`` export requires."""
    if repository is not None:
        return server_environment(repository / REQUIREMENTS_FILE, venv_path())
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / REQUIREMENTS_FILE
        requirements.write_text(requirements_text(needs_onnxruntime=True, needs_serve=False), encoding="utf-8")
        return server_environment(requirements, venv_path())


class TritonServer(_TritonServer):
    """The library's server on a port below the ephemeral range (see :func:`tests.conftest.free_port`)."""

    def __init__(self, venv: Path, repository: Path, **kwargs) -> None:
        super().__init__(venv, repository, port=free_port(), **kwargs)


def parse_config(path: Path):
    """A config.pbtxt parsed with Triton's own schema (tritonclient's model_config_pb2)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
