"""A seeded zoo network written as a PaddleX inference directory: ``inference.json`` + ``inference.pdiparams``
(``paddle.jit.save``, PIR) and an ``inference.yml`` in PaddleX's layout.

Seeding the weights is :mod:`hpi.zoo.seeding`'s job; this module only writes what PaddleX reads. Detectors and
PaddleClas' exact recognition config are written by :mod:`hpi.zoo.shituv2_seeding`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml

from hpi.errors import ExportError
from hpi.preprocess.spec import PreprocessSpec
from hpi.zoo.record import ZooModel
from hpi.zoo.seeding import (
    DEFAULT_MARGIN,
    MIN_DECISIVE_MARGIN,
    SeedReport,
    build_seeded,
    imagenet1k_labels,
    preprocess_spec,
    seed_weights,
)


def inference_config(
    model_name: str,
    spec: PreprocessSpec,
    labels: tuple[str, ...] | list[str] | None,
    *,
    task: Literal["classification", "embedding"] = "classification",
    topk: int = 5,
) -> dict[str, Any]:
    """The content of an ``inference.yml`` in PaddleX's layout (Topk for classifiers, NormalizeFeatures else)."""
    if task == "classification":
        topk_cfg: dict[str, Any] = {"topk": topk}
        if labels is not None:
            topk_cfg["label_list"] = list(labels)
        post: dict[str, Any] = {"Topk": topk_cfg}
    else:
        post = {"NormalizeFeatures": None}
    return {
        "Global": {"model_name": model_name},
        "PreProcess": {"transform_ops": spec.to_transform_ops()},
        "PostProcess": post,
    }


def save_inference_model(
    layer: Any,
    directory: Path,
    *,
    input_size: int | tuple[int, int],
    config: dict[str, Any],
) -> None:
    """Write ``inference.json`` + ``inference.pdiparams`` (``paddle.jit.save``, PIR) and ``inference.yml``.

    The input is named ``x`` with a dynamic batch, as PaddleClas exports do.

    Raises:
        ExportError: ``paddle.jit.save`` failed.
    """
    import paddle

    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    layer.eval()
    spec = [paddle.static.InputSpec([None, 3, h, w], "float32", "x")]
    try:
        paddle.jit.save(layer, str(directory / "inference"), input_spec=spec)
    except Exception as exc:  # Paddle raises many kinds; wrap at the boundary
        raise ExportError(f"paddle.jit.save failed for {config['Global']['model_name']}: {exc}") from exc
    with open(directory / "inference.yml", "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh, sort_keys=False, allow_unicode=True)


def export_zoo_model(
    model: ZooModel,
    directory: Path,
    *,
    seed: int = 0,
    margin: float = DEFAULT_MARGIN,
    on_built: Callable[[Any], None] | None = None,
) -> SeedReport:
    """Build ``model`` with seeded weights and write it as a PaddleX inference directory into ``directory``.

    Args:
        model: the zoo record.
        directory: an existing, empty directory (the store builds into a temporary one and renames it).
        seed: seed for every random draw.
        margin: see :func:`seed_weights`.
        on_built: called with the seeded layer before it is saved (tests use it to inspect or to fail).

    Raises:
        ExportError: the network could not be made decisive, or saving failed.
    """
    import paddle

    with (
        paddle.utils.unique_name.guard()
    ):  # parameter names (and so the files) must not depend on earlier builds
        return _export(model, directory, seed=seed, margin=margin, on_built=on_built)


def _export(
    model: ZooModel, directory: Path, *, seed: int, margin: float, on_built: Callable[[Any], None] | None
) -> SeedReport:
    spec = preprocess_spec(model)
    layer = build_seeded(model, seed)
    report = seed_weights(layer, spec, seed=seed, task=model.task, margin=margin)
    if report.min_margin is not None and report.min_margin < MIN_DECISIVE_MARGIN:
        raise ExportError(
            f"{model.name}: seeding reached a top-1 margin of only {report.min_margin:.3f} logits on the "
            f"calibration photos ({report.calibration}); expected at least {margin}"
        )
    if on_built is not None:
        on_built(layer)
    if model.task == "detection":
        raise ExportError(f"{model.name}: detection models are exported by their own family module")
    labels = imagenet1k_labels() if model.task == "classification" else None
    config = inference_config(model.name, spec, labels, task=model.task)
    save_inference_model(layer, directory, input_size=model.input_size, config=config)
    return report
