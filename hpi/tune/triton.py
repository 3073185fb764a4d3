"""Measuring one deployment through a real Triton server: the model exported as a Triton repository with the
deployment's values (its record exported as ``hpi export --format triton --tuned`` exports one), served by the ``nvidia-pytriton``
wheel's ``tritonserver`` on a free loopback port, loaded by :mod:`hpi.tune.load` as ``hpi serve`` is, stopped again.

That server has only the Python backend, so the repository is the ``--engine-backend python`` variant: the same
ONNX graph on ONNX Runtime inside a Triton Python model, behind the same ensemble, dynamic batcher and instance
groups as the ``onnxruntime``-backend repository. The figures are that variant's; the record says so.

The requests are KServe v2 inference requests with Triton's binary tensor extension: a JSON header naming the
``IMAGE`` input (one BYTES element: a 4-byte little-endian length, then the encoded image) followed by those bytes.
A response counts when it is HTTP 200 with a ``CLASS_IDS`` output.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from hpi.cache import EngineCache
from hpi.errors import HpiError
from hpi.selection.record import SelectionRecord
from hpi.source import ModelSource
from hpi.tune.load import build_request, http_get
from hpi.tune.measure import LoadPlan, Traffic, deployment_record, free_port, load_levels
from hpi.tune.record import write_json
from hpi.tune.search import Deployment, Measurement

ENGINE_BACKEND = "python"  # the only engine backend nvidia-pytriton's server has
THROUGH = "tritonserver (nvidia-pytriton's build, Python backend): the repository exported with --engine-backend python"


def triton_traffic(port: int, model: str, image: Path) -> Traffic:
    """One KServe v2 request for ``model``'s ``IMAGE`` input with ``image``'s bytes (binary tensor extension)."""
    data = image.read_bytes()
    tensor = struct.pack("<I", len(data)) + data  # a BYTES element: its length, then its bytes
    header = json.dumps({"inputs": [{"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(tensor)}}],
                         "outputs": [{"name": "CLASS_IDS", "parameters": {"binary_data": False}}]}).encode()
    return Traffic(build_request(port, header + tensor, f"/v2/models/{model}/infer",
                                 {"Content-Type": "application/octet-stream",
                                  "Inference-Header-Content-Length": str(len(header))}), check_triton)


def check_triton(status: int, headers: dict[str, str], body: bytes) -> str | None:
    """None for a Triton response with class ids, else what was wrong."""
    if status != 200:
        return f"http_{status}"
    try:
        outputs = {o.get("name"): o for o in json.loads(body).get("outputs", [])}
    except (ValueError, AttributeError):
        return "bad_json"
    return None if outputs.get("CLASS_IDS", {}).get("data") else "no_class_ids"


class TritonMeasurer:
    """Measures deployments through a real ``tritonserver``, each in a freshly exported repository and server.

    Args:
        source: the model.
        selection: its selection record (the decision the repository is exported from).
        cache: the engine cache the ONNX graph comes from.
        plan: the load levels.
        workdir: where the repository and the servers' log (``servers.log``) go.
        venv: the server's environment (default: :func:`hpi.scaleout.triton.environment.default_venv`); created or
            updated with the repository's requirements on the first measurement.
        progress: called with a line when the environment is prepared.
    """

    through = THROUGH

    def __init__(self, source: ModelSource, selection: SelectionRecord, cache: EngineCache, plan: LoadPlan,
                 workdir: Path, venv: Path | None = None, progress: Any = None) -> None:
        self.source, self.selection, self.cache, self.plan = source, selection, cache, plan
        self.workdir, self.venv, self.progress = workdir, venv, progress
        self.log = workdir / "servers.log"
        self.server_version: str | None = None
        self._ready_venv: Path | None = None

    def with_plan(self, plan: LoadPlan) -> TritonMeasurer:
        other = TritonMeasurer(self.source, self.selection, self.cache, plan, self.workdir, self.venv, self.progress)
        other._ready_venv, other.server_version = self._ready_venv, self.server_version
        return other

    def repository(self, d: Deployment) -> Any:
        """``d`` exported as the Python-engine repository (replacing the previous deployment's), the way
        ``hpi export --format triton --tuned`` exports a record: ``d``'s own record, read and applied by the same
        functions."""
        from hpi.scaleout.triton import (
            TritonExportOptions,
            apply_tuned,
            export_triton_repository,
            read_tune_record,
        )

        record = write_json(self.workdir / "deployment.json", deployment_record(self.source.name, d, "triton"))
        options = apply_tuned(TritonExportOptions(engine_backend=ENGINE_BACKEND), read_tune_record(record),
                              self.source.name)
        return export_triton_repository(self.source, self.workdir / "repository", cache=self.cache,
                                        record=self.selection, options=options)

    def _environment(self, repository: Path) -> Path:
        from hpi.scaleout.triton.environment import REQUIREMENTS_FILE, server_environment

        if self._ready_venv is None:  # the requirements are the same for every deployment of one model
            self._ready_venv = server_environment(repository / REQUIREMENTS_FILE, self.venv, progress=self.progress)
        return self._ready_venv

    def __call__(self, d: Deployment) -> Measurement:
        from hpi.scaleout.triton import TritonServer

        start = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            repo = self.repository(d)
            venv = self._environment(repo.path)
            with open(self.log, "ab") as log:
                port = free_port()
                log.write(f"\n==== {d.key} on port {port}\n".encode())
                log.flush()
                with TritonServer(venv, repo.path, port=port, start_timeout_s=self.plan.start_timeout_s,
                                  log=log) as server:
                    if self.server_version is None:
                        self.server_version = json.loads(http_get(server.port, "/v2")[1]).get("version")
                    points = load_levels(server.port, self.plan, triton_traffic(server.port, repo.entry_model,
                                                                                self.plan.image))
        except HpiError as exc:
            return Measurement(d, (), time.monotonic() - start, f"{exc} (log: {self.log})")
        return Measurement(d, tuple(points), time.monotonic() - start)
