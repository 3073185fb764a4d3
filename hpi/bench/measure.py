"""Measuring models for benchmarks: every candidate per (threads, batch size), and the stage split of both modes.

Every timing comes from :mod:`hpi.harness`, each configuration in its own process. The result of one model is a
:class:`ModelBench`; :mod:`hpi.bench.report` turns benches into tables and :mod:`hpi.bench.plot` into a chart.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpi.cache import EngineCache
from hpi.config import HpiConfig
from hpi.device import Device, resolve_threads
from hpi.errors import InvalidConfigError
from hpi.harness import run_isolated, time_callable
from hpi.inputs import expand_inputs
from hpi.loading import load_model, locate_model
from hpi.models.classification import Predictor
from hpi.preprocess import reference
from hpi.preprocess.decode import decode_image
from hpi.selection.candidates import high_performance_config
from hpi.selection.measure import SAMPLE_IMAGES, select
from hpi.selection.record import SelectionRecord
from hpi.source import ModelSource

STAGE_IMAGE_SIZE = (500, 375)  # the reference JPEG: 500x375 to 224x224


def weights_label(source: ModelSource) -> str:
    from hpi.zoo.store import weights_kind

    return weights_kind(source.directory) or "user"


def stage_image(tmp_dir: Path) -> Path:
    """The reference JPEG for stage timings: a built-in photo at 500x375."""
    import cv2

    src = cv2.imread(str(SAMPLE_IMAGES / "chelsea.jpg"))
    path = tmp_dir / "stage_500x375.jpg"
    cv2.imwrite(str(path), cv2.resize(src, STAGE_IMAGE_SIZE, interpolation=cv2.INTER_AREA),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def measure_stages(request: dict[str, Any]) -> dict[str, Any]:
    """Per-stage timings of one predictor configuration (runs isolated). ``fast`` picks hpi's preprocessing
    path; otherwise PaddleX's reference op chain is used, as PaddleX's normal mode runs it."""
    source = ModelSource.from_path(request["model_dir"])
    predictor = load_model(Predictor, source, device=request["device"], cache_dir=request["cache_dir"],
                           hpi_config={"backend": request["backend"], "backend_config": request["config"]},
                           fast_preprocess=bool(request["fast"]))
    engine = predictor.engine
    bs, budget = int(request["batch_size"]), float(request["budget_s"])
    path = request["image"]
    data = Path(path).read_bytes()
    rgb = decode_image(data, path)
    images = [rgb] * bs
    batch = predictor.preprocess(images)
    if not request["fast"]:  # the baseline really is PaddleX's chain
        np.testing.assert_array_equal(batch, reference.preprocess_batch(source.spec.preprocess, images))
    output = engine.run(batch)[0]
    item = expand_inputs([path])[0]

    def post() -> None:
        for row in output:
            predictor.make_result(item, rgb, row, None)

    timings = {
        "decode": time_callable(lambda: [decode_image(data, path) for _ in range(bs)], budget_s=budget,
                                items_per_call=bs),
        "preprocess": time_callable(lambda: predictor.preprocess(images), budget_s=budget, items_per_call=bs),
        "inference": time_callable(lambda: engine.run(batch), budget_s=budget, items_per_call=bs),
        "postprocess": time_callable(post, budget_s=budget, items_per_call=bs),
        "end_to_end": time_callable(lambda: list(predictor.predict([path] * bs, batch_size=bs)), budget_s=budget,
                                    items_per_call=bs),
    }
    predictor.close()
    return {k: v.to_dict() for k, v in timings.items()}


@dataclass
class ModelBench:
    """Everything measured for one model on one device."""

    model: str
    weights: str  # "seeded" (zoo build), "real" (store) or "user" (a directory given)
    device: str
    runs: list[dict[str, Any]] = field(default_factory=list)  # {threads, batch_size, record, stages}
    loadavg: tuple[str, str] = ("", "")  # /proc/loadavg's 1-minute figure when the bench started and ended

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "weights": self.weights, "device": self.device, "loadavg": list(self.loadavg),
                "runs": [{**r, "record": r["record"].to_dict()} for r in self.runs]}


def bench_model(
    source: ModelSource,
    device: Device,
    *,
    batch_sizes: Sequence[int] = (1,),
    threads: Sequence[int | None] = (None,),
    hpi_config: HpiConfig | None = None,
    budget_s: float = 3.0,
    stages: bool = True,
    cache: EngineCache | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelBench:
    """Measure every candidate for each (threads, batch size), and the stage split of normal vs high-performance
    mode. Each configuration runs in its own process. ``hpi_config``: the selection policy (reduced precision,
    calibration and gate data, ...) as ``create_model`` takes it; its ``threads`` is replaced by each of
    ``threads``."""
    cache = cache or EngineCache()
    result = ModelBench(source.name, weights_label(source), str(device))
    start_load = load_average()
    with tempfile.TemporaryDirectory(prefix="hpi-bench-") as tmp:
        image = stage_image(Path(tmp))
        for t in threads:
            cfg = dataclasses.replace(hpi_config or HpiConfig(), threads=t)
            for bs in batch_sizes:
                label = f"{source.name} threads={resolve_threads(t) if not device.is_gpu else '-'} batch={bs}"
                record = select(source, device, cfg, cache=cache, batch_size=bs, budget_s=budget_s,
                                progress=(lambda s, label=label: progress(f"{label} {s}")) if progress else None)
                run: dict[str, Any] = {"threads": record.threads, "batch_size": bs, "record": record}
                # The stage split is per image at batch 1 (what the preprocessing targets are stated for); at larger
                # batches the candidate table already gives throughput, and timing every stage of a large model at
                # batch 8 would take minutes.
                if stages and bs == 1 and source.spec.task in ("classification", "embedding"):
                    if progress:
                        progress(f"{label} stage split")
                    run["stages"] = _stage_split(source, device, record, cfg, image, bs, budget_s, cache)
                result.runs.append(run)
    result.loadavg = (start_load, load_average())
    return result


def load_average() -> str:
    """The machine's 1-minute load average, or "-" where the platform has none."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (OSError, AttributeError):
        return "-"


def _stage_split(source: ModelSource, device: Device, record: SelectionRecord, hpi_config: HpiConfig, image: Path,
                 bs: int, budget_s: float, cache: EngineCache) -> dict[str, dict[str, Any]]:
    out = {}
    win = record.winner.candidate
    # High-performance mode as create_model(use_hpip=True) runs it, under the same hpi_config the selection had.
    hp = high_performance_config(win.backend, win.config, source, hpi_config)
    modes = {"high-performance": (win.backend, win.label, hp, True)}
    if record.normal is not None:
        normal = record.normal.candidate
        modes = {"normal": (normal.backend, normal.label, normal.config, False), **modes}
    for mode, (backend, label, config, fast) in modes.items():
        request = {"model_dir": str(source.directory), "device": str(device), "backend": backend, "config": config,
                   "cache_dir": str(cache.root), "image": str(image), "batch_size": bs,
                   "budget_s": max(1.0, budget_s / 2), "fast": fast}
        folded = " +folded" if config.get("fold_preprocess") else ""
        out[mode] = {"candidate": label + folded, **run_isolated("hpi.bench.measure:measure_stages", request)}
    return out


def bench_models(
    models: Sequence[str],
    device: Device,
    *,
    model_dir: str | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> Iterator[ModelBench]:
    """:func:`bench_model` for each named model in turn, found by :func:`hpi.loading.locate_model` (zoo models are built into
    the local model store when missing). Yields each model's bench as soon as it is measured, so a long run can save
    what it has.

    Args:
        models: model names.
        device: where to measure.
        model_dir: a PaddleX inference directory; only with a single model.
        progress: called with a line per step.
        **options: :func:`bench_model`'s keyword arguments (batch_sizes, threads, budget_s, stages, cache, ...).

    Raises:
        InvalidConfigError: ``model_dir`` with more than one model.
    """
    if model_dir and len(models) > 1:
        raise InvalidConfigError(f"model_dir goes with a single model, got {len(models)}: {', '.join(models)}")
    for i, name in enumerate(models):
        if progress:
            progress(f"model {i + 1}/{len(models)}: {name}")
        source = locate_model(name, model_dir, build=True)
        yield bench_model(source, device, progress=progress, **options)
