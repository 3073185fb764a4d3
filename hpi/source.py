"""Model sources: a PaddleX inference directory (or an ONNX file) and its typed ``inference.yml``.

A PaddleX inference model directory holds::

    inference.json | inference.pdmodel   the program (PIR JSON, or the older protobuf)
    inference.pdiparams                  the weights
    inference.yml                        Global.model_name, PreProcess.transform_ops, PostProcess

An ONNX model is accepted as ``model.onnx`` (any ``*.onnx``) with an ``inference.yml`` beside it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hpi.errors import ModelSourceError
from hpi.preprocess.spec import PreprocessSpec

Task = Literal["classification", "embedding", "detection"]
ModelFormat = Literal["paddle", "onnx"]


@dataclass(frozen=True)
class TopkSpec:
    """PaddleX's ``PostProcess.Topk``."""

    topk: int  # how many classes a result lists by default
    label_list: tuple[str, ...] | None  # class names by index; None prints ids only


@dataclass(frozen=True)
class ModelSpec:
    """The parts of ``inference.yml`` hpi acts on, typed and validated."""

    model_name: str  # Global.model_name
    task: Task  # from PostProcess: Topk -> classification, NormalizeFeatures -> embedding
    preprocess: PreprocessSpec | None  # None for detection models (their Preprocess has another shape)
    topk: TopkSpec | None  # classification only
    raw: Mapping[str, Any] = field(repr=False, compare=False)  # the whole parsed file

    @classmethod
    def from_yaml(cls, path: Path) -> ModelSpec:
        """Parse ``inference.yml``; a malformed file raises :class:`ModelSourceError` naming file and key."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            cfg = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ModelSourceError(f"{path}: not valid YAML: {exc}") from exc
        try:
            return cls.from_mapping(cfg)
        except ModelSourceError as exc:
            raise ModelSourceError(f"{path}: {exc}") from None

    @classmethod
    def from_mapping(cls, cfg: Any) -> ModelSpec:
        if not isinstance(cfg, dict):
            raise ModelSourceError(f"expected a mapping at the top level, got {type(cfg).__name__}")
        glob = cfg.get("Global")
        if not isinstance(glob, dict) or not isinstance(glob.get("model_name"), str) or not glob["model_name"]:
            raise ModelSourceError("Global.model_name: missing or not a string")
        name = glob["model_name"]

        if "PreProcess" not in cfg and isinstance(cfg.get("Preprocess"), list):
            # PaddleDetection layout (PicoDet and other detectors): parsed by hpi.models.detector_ops.
            return cls(model_name=name, task="detection", preprocess=None, topk=None, raw=cfg)

        pre = cfg.get("PreProcess")
        if not isinstance(pre, dict) or "transform_ops" not in pre:
            raise ModelSourceError("PreProcess.transform_ops: missing")
        preprocess = PreprocessSpec.from_transform_ops(pre["transform_ops"])

        post = cfg.get("PostProcess")
        if not isinstance(post, dict) or not post:
            raise ModelSourceError("PostProcess: missing; expected Topk (classification) or NormalizeFeatures")
        if "Topk" in post:
            return cls(name, "classification", preprocess, _parse_topk(post["Topk"]), cfg)
        if "NormalizeFeatures" in post:
            return cls(name, "embedding", preprocess, None, cfg)
        raise ModelSourceError(f"PostProcess: unsupported keys {sorted(post)}; expected Topk or NormalizeFeatures")


def _parse_topk(topk: Any) -> TopkSpec:
    if topk is None:
        topk = {}
    if not isinstance(topk, dict):
        raise ModelSourceError(f"PostProcess.Topk: expected a mapping, got {topk!r}")
    k = topk.get("topk", 5)
    if not isinstance(k, int) or k < 1:
        raise ModelSourceError(f"PostProcess.Topk.topk: expected a positive integer, got {k!r}")
    labels = topk.get("label_list")
    if labels is not None:
        if not isinstance(labels, list) or not labels:
            raise ModelSourceError("PostProcess.Topk.label_list: expected a non-empty list of names")
        labels = tuple(str(x) for x in labels)
    return TopkSpec(topk=k, label_list=labels)


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are, what format they are in, and its spec. Identity is content, not path."""

    directory: Path
    format: ModelFormat
    model_file: Path  # inference.json / inference.pdmodel / *.onnx
    params_file: Path | None  # inference.pdiparams (Paddle only)
    config_file: Path  # inference.yml
    spec: ModelSpec

    @property
    def name(self) -> str:
        return self.spec.model_name

    @classmethod
    def from_path(cls, path: str | Path, model_name: str | None = None) -> ModelSource:
        """Locate a model in a directory (or at an ONNX file) and parse its ``inference.yml``.

        Args:
            path: a PaddleX inference directory, a directory with one ``*.onnx`` and ``inference.yml``,
                or the ``.onnx`` file itself.
            model_name: when given, must equal ``Global.model_name`` (as PaddleX requires).
        """
        path = Path(path).expanduser()
        if not path.exists():
            raise ModelSourceError(f"model path {path} does not exist")
        if path.is_file():
            if path.suffix != ".onnx":
                raise ModelSourceError(f"model path {path} is a file but not an .onnx model; pass the directory")
            directory, onnx_files = path.parent, [path]
        else:
            directory, onnx_files = path, sorted(path.glob("*.onnx"))

        config = directory / "inference.yml"
        if not config.is_file():
            raise ModelSourceError(f"{directory}: inference.yml is missing")
        spec = ModelSpec.from_yaml(config)
        if model_name is not None and model_name != spec.model_name:
            raise ModelSourceError(
                f"{config}: Global.model_name is {spec.model_name!r} but model_name={model_name!r} was requested"
            )

        params = directory / "inference.pdiparams"
        for program in (directory / "inference.json", directory / "inference.pdmodel"):
            if program.is_file() and not path.is_file():
                if not params.is_file():
                    raise ModelSourceError(f"{directory}: {program.name} found but inference.pdiparams is missing")
                return cls(directory, "paddle", program, params, config, spec)
        if len(onnx_files) == 1:
            return cls(directory, "onnx", onnx_files[0], None, config, spec)
        if len(onnx_files) > 1:
            names = ", ".join(p.name for p in onnx_files)
            raise ModelSourceError(f"{directory}: several ONNX files ({names}); pass the one to use")
        raise ModelSourceError(
            f"{directory}: no model program found; expected inference.json or inference.pdmodel "
            "(with inference.pdiparams), or one .onnx file"
        )

    @functools.cached_property
    def content_hash(self) -> str:
        """sha256 over the program, the weights and inference.yml: the model's identity in every cache key."""
        digest = hashlib.sha256()
        for p in (self.model_file, self.params_file, self.config_file):
            if p is None:
                continue
            digest.update(p.name.encode() + b"\0")
            with open(p, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()
