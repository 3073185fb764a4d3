"""The two repository layouts, written into a staging directory: ``hpi`` (engine + pre/post-processing + ensemble)
and ``paddlex`` (PaddleX's high-stability-serving layout, one JSON model per endpoint).

Python models get a one-line ``model.py`` that imports their ``TritonPythonModel`` from the installed hpi
(:mod:`hpi.scaleout.triton.python_models`); their ``hpi_version`` parameter lets them refuse another hpi.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpi.artefacts.openvino import onnx_to_ir
from hpi.errors import ExportError
from hpi.scaleout.triton.graph import GraphIO
from hpi.scaleout.triton.pbtxt import Enum, parameters, tensor, to_pbtxt
from hpi.scaleout.triton.plan import EnginePlan, TritonExportOptions
from hpi.source import ModelSource
from hpi.version import __version__

PADDLEX_CLASSIFY_MODEL = "image-classification"  # PaddleX's hps endpoint name (deploy/hps/sdk/pipelines/...)


@dataclass(frozen=True)
class LayoutInput:
    """Everything a layout writes from: the model, the plan and the exported graph."""

    source: ModelSource
    plan: EnginePlan
    options: TritonExportOptions
    io: GraphIO
    folded: bool  # the graph takes uint8 NHWC (normalisation folded in)
    labels: tuple[str, ...]
    topk: int
    onnx_file: Path
    trt_cache_path: str | None = None  # GPU with TensorRT: the engine cache on the Triton host


class LayoutWriter:
    """Writes the models of one repository into a staging directory."""

    def __init__(self, root: Path, given: LayoutInput) -> None:
        self.root, self.given = root, given
        self.name = given.source.name

    # ------------------------------------------------------------------------------------------- pieces

    def _preprocess_params(self) -> dict[str, Any]:
        spec = self.given.source.spec.preprocess
        cores = self.given.plan.cores or self.given.options.cores
        return {"transform_ops": json.dumps(spec.to_transform_ops()), "folded": "1" if self.given.folded else "0",
                "output_name": self.given.io.input_name, "preprocess_threads": cores, "hpi_version": __version__}

    def _input_dims(self) -> list[int]:
        """The engine input's dims, with sizes the preprocessing fixes filled in where the graph leaves them open."""
        dims = list(self.given.io.input_dims)
        width, height = self.given.source.spec.preprocess.output_size or (-1, -1)
        want = [height, width, 3] if self.given.folded else [3, height, width]
        return [d if d != -1 else w for d, w in zip(dims, want)] if len(dims) == 3 else dims

    def _config(self, model: str, message: Mapping[str, Any]) -> None:
        directory = self.root / model
        (directory / "1").mkdir(parents=True, exist_ok=True)
        (directory / "config.pbtxt").write_text(to_pbtxt({"name": model, **message}), encoding="utf-8")

    def _python_model(self, model: str, role: str) -> Path:
        """``model/1/model.py``: the import of hpi's ``TritonPythonModel`` for ``role`` from the installed hpi."""
        version = self.root / model / "1"
        version.mkdir(parents=True, exist_ok=True)
        module = f"hpi.scaleout.triton.python_models.{role}"
        (version / "model.py").write_text(
            f'"""Triton Python model {model}: hpi\'s {role} model, imported from the hpi installed in the server\'s '
            f'Python\nenvironment (requirements.txt at the repository\'s root; exported by hpi {__version__})."""\n\n'
            f'from {module} import TritonPythonModel  # noqa: F401\n', encoding="utf-8")
        return version

    def _instance_groups(self) -> list[dict[str, Any]]:
        group: dict[str, Any] = {"count": self.given.plan.instances, "kind": Enum(self.given.plan.kind)}
        if self.given.plan.kind == "KIND_GPU":
            group["gpus"] = [0]
        return [group]

    def _batching(self, *, engine: bool) -> dict[str, Any]:
        batching: dict[str, Any] = {"max_queue_delay_microseconds": self.given.options.max_queue_delay_us}
        if engine and self.given.options.preferred_batch_sizes:
            batching = {"preferred_batch_size": list(self.given.options.preferred_batch_sizes), **batching}
        return batching

    # ------------------------------------------------------------------------------------------- layouts

    def write_hpi(self) -> tuple[list[str], str]:
        name, io, opts = self.name, self.given.io, self.given.options
        engine_in = tensor(io.input_name, io.input_type, self._input_dims())
        engine_out = tensor(io.output_name, io.output_type, [len(self.given.labels)])
        self._write_engine(engine_in, engine_out)

        pre = f"{name}_preprocess"
        self._config(pre, {
            "backend": "python", "max_batch_size": opts.max_batch_size,
            "input": [tensor("IMAGE", "TYPE_STRING", [1])], "output": [engine_in],
            "dynamic_batching": self._batching(engine=False),
            "instance_group": [{"count": 1, "kind": Enum("KIND_CPU")}],
            "parameters": parameters(self._preprocess_params()),
        })
        self._python_model(pre, "preprocess")

        post = f"{name}_postprocess"
        k = min(self.given.topk, len(self.given.labels))
        outputs = [tensor("CLASS_IDS", "TYPE_INT64", [k]), tensor("SCORES", "TYPE_FP32", [k]),
                   tensor("LABEL_NAMES", "TYPE_STRING", [k])]
        self._config(post, {
            "backend": "python", "max_batch_size": opts.max_batch_size, "input": [engine_out], "output": outputs,
            "dynamic_batching": self._batching(engine=False),
            "instance_group": [{"count": 1, "kind": Enum("KIND_CPU")}],
            "parameters": parameters({"input_name": io.output_name, "topk": k, "hpi_version": __version__}),
        })
        version = self._python_model(post, "postprocess")
        (version / "labels.json").write_text(json.dumps(list(self.given.labels), ensure_ascii=False),
                                             encoding="utf-8")

        ensemble = f"{name}_ensemble"

        def step(model: str, inputs: Mapping[str, str], outputs_: Mapping[str, str]) -> dict[str, Any]:
            return {"model_name": model, "model_version": -1,
                    "input_map": [{"key": k_, "value": v} for k_, v in inputs.items()],
                    "output_map": [{"key": k_, "value": v} for k_, v in outputs_.items()]}

        self._config(ensemble, {
            "platform": "ensemble", "max_batch_size": opts.max_batch_size,
            "input": [tensor("IMAGE", "TYPE_STRING", [1])], "output": outputs,
            "ensemble_scheduling": {"step": [
                step(pre, {"IMAGE": "IMAGE"}, {io.input_name: "pixels"}),
                step(name, {io.input_name: "pixels"}, {io.output_name: "class_scores"}),
                step(post, {io.output_name: "class_scores"}, {t["name"]: t["name"] for t in outputs}),
            ]},
        })
        return [name, pre, post, ensemble], ensemble

    def _write_engine(self, engine_in: dict[str, Any], engine_out: dict[str, Any]) -> None:
        plan, opts = self.given.plan, self.given.options
        message: dict[str, Any] = {"backend": plan.backend, "max_batch_size": opts.max_batch_size,
                                   "input": [engine_in], "output": [engine_out],
                                   "dynamic_batching": self._batching(engine=True),
                                   "instance_group": self._instance_groups()}
        version = self.root / self.name / "1"
        version.mkdir(parents=True, exist_ok=True)
        threads = plan.threads_per_instance
        if plan.backend == "onnxruntime":
            message["default_model_filename"] = "model.onnx"
            if threads:
                message["parameters"] = parameters({"intra_op_thread_count": threads, "inter_op_thread_count": 1})
            if plan.tensorrt:
                trt = {"precision_mode": plan.precision.upper(), "trt_engine_cache_enable": "1",
                       "trt_engine_cache_path": self.given.trt_cache_path or ""}
                message["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [
                    {"name": "tensorrt", "parameters": [{"key": k, "value": v} for k, v in trt.items()]}]}}
            shutil.copyfile(self.given.onnx_file, version / "model.onnx")
        elif plan.backend == "python":
            message["parameters"] = parameters({"intra_op_thread_count": threads, "hpi_version": __version__})
            shutil.copyfile(self.given.onnx_file, version / "model.onnx")
            self._python_model(self.name, "engine")
        elif plan.backend == "openvino":
            # No precision parameter: the backend cannot force one, and bf16 is the CPU plugin's default here.
            message["parameters"] = parameters({"INFERENCE_NUM_THREADS": threads,
                                                "NUM_STREAMS": opts.openvino_streams or 1})
            onnx_to_ir(self.given.onnx_file, version)
        else:
            raise ExportError(f"no Triton engine writer for backend {plan.backend!r}")
        self._config(self.name, message)

    def write_paddlex(self) -> tuple[list[str], str]:
        model = PADDLEX_CLASSIFY_MODEL
        plan = self.given.plan
        threads = plan.threads_per_instance or plan.cores or self.given.options.cores
        params = {**self._preprocess_params(), "preprocess_threads": 1, "intra_op_thread_count": threads,
                  "topk": self.given.topk}
        # PaddleX's hps configs: backend python, max_batch_size 1, input "input" and output "output" (TYPE_STRING).
        self._config(model, {
            "backend": "python", "max_batch_size": 1,
            "input": [tensor("input", "TYPE_STRING", [1])], "output": [tensor("output", "TYPE_STRING", [1])],
            "instance_group": [{"count": plan.instances, "kind": Enum("KIND_CPU")}],
            "parameters": parameters(params),
        })
        version = self._python_model(model, "paddlex_classify")
        shutil.copyfile(self.given.onnx_file, version / "model.onnx")
        (version / "labels.json").write_text(json.dumps(list(self.given.labels), ensure_ascii=False),
                                             encoding="utf-8")
        return [model], model
