"""Pipeline configurations: PaddleX's pipeline YAML (both layouts) parsed into typed, frozen configs.

The classification pipeline accepts both layouts PaddleX has used::

    Pipeline:                          SubModules:
      model: PP-LCNet_x1_0               ImageClassification:
      model_dir: null                      module_name: image_classification
      device: null                         model_name: PP-LCNet_x0_5
      batch_size: 1                        model_dir: null
      topk: 5                              batch_size: 4
                                           topk: 5

PP-ShiTuV2 takes ``index``, ``det_threshold``, ``rec_threshold``, ``rec_topk`` and ``SubModules: {Detection,
Recognition}``. Unknown keys and wrong types are errors that name the key. Each pipeline's shipped default is
``hpi/data/pipelines/<name>.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpi.errors import InvalidConfigError, StorageError
from hpi.storage import write_file_atomic

CONFIG_DIR = Path(__file__).resolve().parent.parent / "data" / "pipelines"


# ---------------------------------------------------------------------------------------------------------------
# typed configs


@dataclass(frozen=True)
class ModelConfig:
    """One sub-model of a pipeline (PaddleX's ``SubModules.<name>`` entry, or the older ``Pipeline`` block)."""

    model_name: str  # the PaddleX model name; must match the model's inference.yml
    model_dir: str | None = None  # a model directory; None: the local model store (built from the zoo if missing)
    batch_size: int = 1  # images per engine call
    device: str | None = None  # this sub-model's device; None: the pipeline's
    use_hpip: bool | None = None  # None: the value given to create_pipeline
    hpi_config: Mapping[str, Any] | None = None  # None: the value given to create_pipeline
    topk: int | None = None  # classifiers: classes per result; None: the model's default
    module_name: str | None = None  # PaddleX records the module kind here; informational


@dataclass(frozen=True)
class ImageClassificationConfig:
    """The ``image_classification`` pipeline."""

    model: ModelConfig
    device: str | None = None  # None: gpu:0 if present, else cpu
    pipeline_name: str = "image_classification"


@dataclass(frozen=True)
class ShiTuConfig:
    """The ``PP-ShiTuV2`` pipeline: PaddleX's keys, plus PP-ShiTu's own box handling."""

    detection: ModelConfig  # SubModules.Detection: the mainbody detector
    recognition: ModelConfig  # SubModules.Recognition: the embedding model
    index: str | None = None  # a saved index directory used when predict() gets none
    det_threshold: float = 0.5  # minimum detection score of a candidate box
    rec_threshold: float = 0.5  # IP: minimum similarity; L2: maximum squared distance of a returned label
    rec_topk: int = 5  # labels per box
    max_det_results: int = 5  # detected boxes recognised per image (best first), besides the whole image
    rec_nms_threshold: float = 0.05  # recognised boxes overlapping a better-matching one above this IoU are dropped
    device: str | None = None
    pipeline_name: str = "PP-ShiTuV2"


PipelineConfig = ImageClassificationConfig | ShiTuConfig

_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}


# ---------------------------------------------------------------------------------------------------------------
# loading and validation


def _fail(where: str, message: str) -> InvalidConfigError:
    return InvalidConfigError(f"{where}: {message}")


def _check_keys(mapping: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise _fail(f"{prefix}{unknown[0]}", f"unknown key; known keys here: {', '.join(sorted(known))}")


def _none(value: Any) -> Any:
    """PaddleX writes ``index: None``, which YAML reads as the string "None"."""
    return None if value in (None, "None", "null", "") else value


def _as_int(value: Any, where: str, *, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _fail(where, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _as_float(value: Any, where: str, *, low: float | None = None, high: float | None = None) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _fail(where, f"expected a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise _fail(where, f"expected a number in [{low}, {high}], got {value!r}")
    return float(value)


def _as_str(value: Any, where: str, *, optional: bool = True) -> str | None:
    value = _none(value) if optional else value
    if value is None and optional:
        return None
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise _fail(where, f"expected a non-empty string{' or null' if optional else ''}, got {value!r}")
    return os.fspath(value)


def _as_bool(value: Any, where: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _fail(where, f"expected true or false, got {value!r}")
    return value


def _parse_model(block: Any, where: str, *, name_key: str = "model_name") -> ModelConfig:
    if not isinstance(block, Mapping):
        raise _fail(where, f"expected a mapping, got {type(block).__name__}")
    keys = _MODEL_KEYS - {"model_name"} | {name_key}
    _check_keys(block, keys, where)
    if name_key not in block:
        raise _fail(f"{where}.{name_key}", "missing: the model to run")
    hpi_config = block.get("hpi_config")
    if hpi_config is not None and not isinstance(hpi_config, Mapping):
        raise _fail(f"{where}.hpi_config", f"expected a mapping, got {hpi_config!r}")
    topk = _none(block.get("topk"))
    return ModelConfig(
        model_name=_as_str(block[name_key], f"{where}.{name_key}", optional=False),  # type: ignore[arg-type]
        model_dir=_as_str(block.get("model_dir"), f"{where}.model_dir"),
        batch_size=_as_int(block.get("batch_size", 1), f"{where}.batch_size"),
        device=_as_str(block.get("device"), f"{where}.device"),
        use_hpip=_as_bool(block.get("use_hpip"), f"{where}.use_hpip"),
        hpi_config=dict(hpi_config) if hpi_config is not None else None,
        topk=None if topk is None else _as_int(topk, f"{where}.topk"),
        module_name=_as_str(block.get("module_name"), f"{where}.module_name"),
    )


def _guess_name(cfg: Mapping[str, Any]) -> str | None:
    sub = cfg.get("SubModules")
    if isinstance(sub, Mapping) and {"Detection", "Recognition"} <= set(sub):
        return "PP-ShiTuV2"
    if "Pipeline" in cfg or (isinstance(sub, Mapping) and "ImageClassification" in sub):
        return "image_classification"
    return None


def parse_config(cfg: Any, *, source: str = "pipeline config") -> PipelineConfig:
    """Validate a pipeline configuration mapping into its typed, frozen config.

    Raises:
        InvalidConfigError: naming ``source`` and the offending key.
    """
    try:
        return _parse_config(cfg)
    except InvalidConfigError as exc:
        raise InvalidConfigError(f"{source}: {exc}") from None


def _parse_config(cfg: Any) -> PipelineConfig:
    if not isinstance(cfg, Mapping):
        raise _fail("top level", f"expected a mapping, got {type(cfg).__name__}")
    name = cfg.get("pipeline_name") or _guess_name(cfg)
    if name is None:
        raise _fail("pipeline_name", f"missing, and the layout matches no pipeline; known: {', '.join(PARSERS)}")
    if name not in PARSERS:
        raise _fail("pipeline_name", f"unknown pipeline {name!r}; known: {', '.join(PARSERS)}")
    return PARSERS[name](cfg)


def _parse_classification(cfg: Mapping[str, Any]) -> ImageClassificationConfig:
    _check_keys(cfg, {"pipeline_name", "Pipeline", "SubModules", "device"}, "")
    if ("Pipeline" in cfg) == ("SubModules" in cfg):
        raise _fail("Pipeline", "give exactly one of 'Pipeline' (model, device, batch_size) or "
                    "'SubModules.ImageClassification'")
    if "Pipeline" in cfg:
        block = cfg["Pipeline"]
        model = _parse_model(block, "Pipeline", name_key="model")
        device = model.device
    else:
        sub = cfg["SubModules"]
        if not isinstance(sub, Mapping):
            raise _fail("SubModules", f"expected a mapping, got {type(sub).__name__}")
        _check_keys(sub, {"ImageClassification"}, "SubModules")
        model = _parse_model(sub["ImageClassification"], "SubModules.ImageClassification")
        device = None
    device = _as_str(cfg.get("device"), "device") or device
    return ImageClassificationConfig(model=model, device=device)


def _parse_shitu(cfg: Mapping[str, Any]) -> ShiTuConfig:
    known = {f.name for f in dataclasses.fields(ShiTuConfig)} - {"detection", "recognition"} | {"SubModules"}
    known |= {"hamming_radius"}
    _check_keys(cfg, known, "")
    if _none(cfg.get("hamming_radius")) is not None:
        raise _fail("hamming_radius", "binary (hamming) indexes are not supported; remove the key or set null")
    sub = cfg.get("SubModules")
    if not isinstance(sub, Mapping):
        raise _fail("SubModules", "missing or not a mapping; expected SubModules: {Detection: ..., Recognition: ...}")
    _check_keys(sub, {"Detection", "Recognition"}, "SubModules")
    for part in ("Detection", "Recognition"):
        if part not in sub:
            raise _fail(f"SubModules.{part}", "missing")
    defaults = ShiTuConfig(detection=ModelConfig("-"), recognition=ModelConfig("-"))
    return ShiTuConfig(
        detection=_parse_model(sub["Detection"], "SubModules.Detection"),
        recognition=_parse_model(sub["Recognition"], "SubModules.Recognition"),
        index=_as_str(cfg.get("index"), "index"),
        det_threshold=_as_float(cfg.get("det_threshold", defaults.det_threshold), "det_threshold", low=0, high=1),
        rec_threshold=_as_float(cfg.get("rec_threshold", defaults.rec_threshold), "rec_threshold"),
        rec_topk=_as_int(cfg.get("rec_topk", defaults.rec_topk), "rec_topk"),
        max_det_results=_as_int(cfg.get("max_det_results", defaults.max_det_results), "max_det_results",
                                minimum=0),
        rec_nms_threshold=_as_float(cfg.get("rec_nms_threshold", defaults.rec_nms_threshold), "rec_nms_threshold",
                                    low=0, high=1),
        device=_as_str(cfg.get("device"), "device"),
    )


# name -> the parser of its configuration: the pipelines that exist (hpi.pipelines maps each to its class).
PARSERS: dict[str, Callable[[Mapping[str, Any]], PipelineConfig]] = {
    "image_classification": _parse_classification,
    "PP-ShiTuV2": _parse_shitu,
}


def default_config_path(name: str) -> Path:
    """The shipped default configuration of a registered pipeline."""
    if name not in PARSERS:
        raise InvalidConfigError(f"unknown pipeline {name!r}; known: {', '.join(PARSERS)}, or a YAML file path")
    return CONFIG_DIR / f"{name}.yaml"


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidConfigError(f"cannot read pipeline config {path}: {exc.strerror or exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidConfigError(f"{path}: not valid YAML: {exc}") from exc


def _is_config_path(pipeline: str | os.PathLike[str]) -> bool:
    text = os.fspath(pipeline)
    return text.endswith((".yaml", ".yml")) or os.sep in text or Path(text).is_file()


def load_config_mapping(pipeline: str | os.PathLike[str]) -> tuple[Any, str]:
    """The raw configuration mapping of a pipeline name or YAML path, and where it came from."""
    if isinstance(pipeline, str) and pipeline in PARSERS:
        path = default_config_path(pipeline)
    elif _is_config_path(pipeline):
        path = Path(pipeline).expanduser()
        if not path.is_file():
            raise InvalidConfigError(f"pipeline config {path} does not exist")
    else:
        raise InvalidConfigError(
            f"unknown pipeline {os.fspath(pipeline)!r}; known: {', '.join(PARSERS)}, or a YAML file path"
        )
    return _read_yaml(path), str(path)


def load_config(pipeline: str | os.PathLike[str]) -> PipelineConfig:
    """The typed configuration of a pipeline name or YAML path."""
    cfg, where = load_config_mapping(pipeline)
    return parse_config(cfg, source=where)


def save_pipeline_config(name: str, save_path: str | os.PathLike[str]) -> Path:
    """Write a pipeline's default configuration to ``save_path/<name>.yaml`` (or to ``save_path`` if it ends in
    ``.yaml``), as ``paddlex --get_pipeline_config NAME --save_path DIR`` does. Returns the written path."""
    src = default_config_path(name)
    target = Path(save_path).expanduser()
    if target.suffix not in (".yaml", ".yml"):
        target = target / f"{name}.yaml"
    try:
        write_file_atomic(target, src.read_bytes())
    except (OSError, StorageError) as exc:
        raise InvalidConfigError(f"cannot write the {name} config to {target}: {exc}") from exc
    return target


