"""Stage timings of PP-ShiTuV2: detect, embed, search, and the whole ``predict`` call.

Measurement stays here, outside the pipeline: each stage is one of the pipeline's public steps
(:meth:`~hpi.pipelines.shitu.ShiTuPipeline.detect`, :meth:`~hpi.pipelines.shitu.ShiTuPipeline.embed`,
:meth:`~hpi.pipelines.shitu.ShiTuPipeline.search`) timed by :func:`hpi.harness.time_callable` on the same image,
with warm-up and percentiles.

>>> print(bench_pipeline("PP-ShiTuV2", device="cpu"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpi.errors import InvalidConfigError
from hpi.harness import Timing, time_callable
from hpi.retrieval import FeatureIndex

STAGES = ("detect", "embed", "search")


@dataclass(frozen=True)
class PipelineStageTimings:
    """What :func:`measure_pipeline_stages` measured, and on what."""

    pipeline: str
    detector: str  # model, backend and precision
    recognizer: str
    image: str  # the input and its size
    candidates: int  # boxes embedded per image (detected + the whole image)
    index: str  # index type, metric and size
    stages: dict[str, Timing] = field(default_factory=dict)  # detect, embed, search, end_to_end
    seeded: bool = False  # a sub-model has seeded weights (timings are real, results are not)

    def table(self) -> str:
        """A plain-text table: p50 / p90 per stage and each stage's share of their sum."""
        total = sum(self.stages[s].p50_ms for s in STAGES if s in self.stages) or 1.0
        lines = [
            f"{self.pipeline}: detector {self.detector}, recognizer {self.recognizer}"
            + (" (seeded weights)" if self.seeded else ""),
            f"input {self.image}, {self.candidates} box(es) embedded per image (detected + whole image); "
            f"index {self.index}",
            f"{'stage':<12}{'p50 ms':>10}{'p90 ms':>10}{'share':>8}{'iterations':>12}",
        ]
        for name, timing in self.stages.items():
            share = f"{100 * timing.p50_ms / total:.0f}%" if name in STAGES else ""
            lines.append(f"{name:<12}{timing.p50_ms:>10.2f}{timing.p90_ms:>10.2f}{share:>8}{timing.iterations:>12}")
        return "\n".join(lines)


def _sample_image_path() -> Path:
    from hpi.selection.measure import SAMPLE_IMAGES

    return SAMPLE_IMAGES / "chelsea.jpg"


def _sample_index(pipeline: Any, gallery_size: int | None, index_type: str, seed: int = 0) -> FeatureIndex:
    """The built-in photos' features, padded with random unit vectors up to ``gallery_size`` items."""
    from hpi.selection.measure import SAMPLE_IMAGES

    photos = sorted(SAMPLE_IMAGES.glob("*.jpg"))
    index = pipeline.build_index([str(p) for p in photos], [p.stem for p in photos], index_type=index_type)
    extra = (gallery_size or 0) - len(index)
    if extra > 0:
        rng = np.random.default_rng(seed)
        vectors = rng.standard_normal((extra, index.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index.append(vectors, [f"synthetic_{i}" for i in range(extra)])
    return index


def measure_pipeline_stages(
    pipeline: Any,
    *,
    image: str | os.PathLike[str] | None = None,
    index: FeatureIndex | str | os.PathLike[str] | None = None,
    gallery_size: int | None = None,
    index_type: str = "HNSW32",
    budget_s: float = 2.0,
    warmup: int = 3,
    min_iterations: int = 10,
) -> PipelineStageTimings:
    """Time each stage of a ``ShiTuPipeline`` on one image.

    Args:
        pipeline: a pipeline from ``create_pipeline("PP-ShiTuV2", ...)``.
        image: an image file; default: the built-in ``chelsea.jpg``.
        index: the index to search; default: one built from the built-in photos (see ``gallery_size``).
        gallery_size: pad the default index with random unit vectors to this many items (search cost grows
            with the gallery).
        index_type: type of the default index.
        budget_s: time per stage, after warm-up.
        warmup: untimed calls per stage.
        min_iterations: timed calls per stage at least.
    """
    from hpi.inputs import expand_inputs

    path = Path(image) if image is not None else _sample_image_path()
    if not path.is_file():
        raise InvalidConfigError(f"bench image {path} does not exist")
    rgb = expand_inputs(str(path))[0].load_rgb()
    idx = _sample_index(pipeline, gallery_size, index_type) if index is None else pipeline.load_index(index)
    cfg = pipeline.config
    candidates = pipeline.detect([rgb])[0]
    kept, features = pipeline.embed(rgb, candidates)

    def timed(fn: Any) -> Timing:
        return time_callable(fn, warmup=warmup, budget_s=budget_s, min_iterations=min_iterations)

    stages = {
        "detect": timed(lambda: pipeline.detect([rgb])),
        "embed": timed(lambda: pipeline.embed(rgb, candidates)),
        "search": timed(lambda: pipeline.search(features, idx, cfg.rec_topk, cfg.rec_threshold)),
        "end_to_end": timed(lambda: list(pipeline.predict(str(path), index=idx))),
    }
    det, rec = pipeline.detector, pipeline.recognizer
    return PipelineStageTimings(
        pipeline=cfg.pipeline_name,
        detector=f"{det.model_name} {det.engine.describe()}",
        recognizer=f"{rec.model_name} {rec.engine.describe()}",
        image=f"{path.name} {rgb.shape[1]}x{rgb.shape[0]}",
        candidates=len(kept),
        index=f"{idx.index_type}/{idx.metric_type} with {len(idx)} item(s) of dimension {idx.dim}",
        stages=stages,
        seeded=pipeline.seeded,
    )


def bench_pipeline(
    pipeline: str | os.PathLike[str] = "PP-ShiTuV2",
    *,
    device: str | None = None,
    use_hpip: bool = False,
    hpi_config: Mapping[str, Any] | None = None,
    image: str | os.PathLike[str] | None = None,
    index: str | os.PathLike[str] | None = None,
    gallery_size: int | None = None,
    budget_s: float = 2.0,
    warmup: int = 3,
    min_iterations: int = 10,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """``hpi bench --pipeline PP-ShiTuV2``: create the pipeline, time its stages, return the table.

    Args:
        pipeline: ``"PP-ShiTuV2"`` or a PP-ShiTuV2 YAML path.
        device, use_hpip, hpi_config, cache_dir: as for :func:`hpi.pipelines.create_pipeline`.
        image, index, gallery_size, budget_s, warmup, min_iterations: as for :func:`measure_pipeline_stages`.

    Example:
        >>> print(bench_pipeline("PP-ShiTuV2", device="cpu", gallery_size=10_000))  # doctest: +SKIP
    """
    from hpi.pipelines import create_pipeline
    from hpi.pipelines.shitu import ShiTuPipeline

    runner = create_pipeline(pipeline, device=device, use_hpip=use_hpip, hpi_config=hpi_config, cache_dir=cache_dir)
    try:
        if not isinstance(runner, ShiTuPipeline):
            raise InvalidConfigError(
                f"bench_pipeline: {os.fspath(pipeline)!r} is not a PP-ShiTuV2 pipeline; the stage split "
                "(detect, embed, search) exists for PP-ShiTuV2 only"
            )
        timings = measure_pipeline_stages(runner, image=image, index=index, gallery_size=gallery_size,
                                          budget_s=budget_s, warmup=warmup, min_iterations=min_iterations)
        return timings.table()
    finally:
        runner.close()
