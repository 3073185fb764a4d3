"""Reduced-scale JPEG decoding as a gated candidate of high-performance mode: judged, then timed end to end.

A phone photo (12 MP, 4000x3000) is decoded at full size and then shrunk to 256 pixels on its short side: most of
the decode is thrown away, and on an AVX2-only AMD EPYC it was 90% of the end-to-end time of PP-LCNet_x1_0
(issue 21). libjpeg can decode at 1/2, 1/4 or 1/8 scale in the DCT domain (``cv2.IMREAD_REDUCED_COLOR_*``,
:func:`hpi.preprocess.decode.decode` with ``min_size``), never below what the resize needs
(:data:`hpi.preprocess.fused.REDUCED_DECODE_MARGIN` times the target, so no upsampling ever). Its pixels differ
from the full-size chain's (an area average instead of a linear resize), so it is never normal mode's default:
:func:`judge` runs the chosen engine on large JPEGs of the gate's photos decoded both ways and judges the reduced
outputs against the full ones with the reduced-precision rules of the accuracy gate (every top-1 kept, top-5
overlap, cosine), and only a passing model uses it (``Predictor(..., reduced_decode=True)``).

High-performance mode asks :func:`cached_verdict` once per model, engine and machine (``hpi_config.reduced_decode``
switches it off); the verdict is cached beside the decision, as kind ``reduced-decode``, and named in the choice's
reason.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hpi.backends.base import Engine
from hpi.backends.choice import BackendChoice
from hpi.cache import EngineCache
from hpi.config import AccuracyGate
from hpi.device import Device, device_signature
from hpi.preprocess.fused import FusedPreprocessor
from hpi.preprocess.graph import ResizeCropU8
from hpi.selection.gate import Accuracy, compare_outputs
from hpi.source import ModelSource

PHONE_PHOTO = (4000, 3000)  # width, height: a 12 MP phone photo
PHONE_QUALITY = 90
VERDICT_FILE = "verdict.json"
RECIPE = 1  # bump when the judging changes: cached verdicts are then judged again
GATE_RULES = "bf16"  # the gate's reduced-precision rules: ranking and cosine, no fp32 score bound


def photo_jpeg(rgb: np.ndarray, size: tuple[int, int] = PHONE_PHOTO, quality: int = PHONE_QUALITY) -> bytes:
    """``rgb`` resized to ``size`` (width, height; bicubic when enlarging, as a camera's detail is not there either)
    and encoded as a JPEG of ``quality``."""
    grow = size[0] * size[1] > rgb.shape[0] * rgb.shape[1]
    resized = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(resized, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {size[0]}x{size[1]} JPEG")
    return data.tobytes()


@dataclass(frozen=True)
class ReducedDecodeVerdict:
    """What the gate said of reduced-scale decoding for one model and engine."""

    accuracy: Accuracy
    reductions: tuple[int, ...]  # the DCT reduction each judged image was decoded at (1 = full size)
    images: int

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": dataclasses.asdict(self.accuracy), "reductions": list(self.reductions), "images": self.images}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReducedDecodeVerdict:
        return cls(Accuracy(**d["accuracy"]), tuple(d["reductions"]), int(d["images"]))

    @property
    def passed(self) -> bool:
        return self.accuracy.passed and any(r > 1 for r in self.reductions)

    def describe(self) -> str:
        scales = ", ".join(f"1/{r}" for r in sorted(set(self.reductions)))
        return (f"reduced-scale decoding {'passed' if self.passed else 'not used'} on {self.images} JPEGs of "
                f"{PHONE_PHOTO[0]}x{PHONE_PHOTO[1]} (decoded at {scales}): {self.accuracy.why}")


def kernels(source: ModelSource, engine: Engine) -> tuple[FusedPreprocessor | ResizeCropU8, ...]:
    """The engine's CPU preprocessing (folded graphs take uint8 crops), full-size and reduced-scale decoding."""
    spec = source.spec.preprocess
    kind = ResizeCropU8 if engine.config.fold_preprocess else FusedPreprocessor
    return kind(spec, threads=1), kind(spec, threads=1, reduced_decode=True)


def judge(source: ModelSource, engine: Engine, jpegs: Sequence[bytes], gate: AccuracyGate | None = None
          ) -> ReducedDecodeVerdict:
    """Run ``engine`` on ``jpegs`` decoded at full size and at reduced scale, and judge the reduced outputs against
    the full ones with the accuracy gate's reduced-precision rules (a classifier's every top-1, top-5 overlap and
    cosine; an embedding's cosine)."""
    full_kernel, reduced_kernel = kernels(source, engine)
    names = [f"photo {i}" for i in range(len(jpegs))]
    try:
        full = full_kernel.process(list(jpegs), names)
        reduced = reduced_kernel.process(list(jpegs), names)
    finally:
        full_kernel.close()
        reduced_kernel.close()
    if full.errors or reduced.errors:
        raise ValueError(f"undecodable gate photos: {[e.error for e in (*full.errors, *reduced.errors)]}")
    ref = np.concatenate([engine.run(full.batch[i:i + 1])[0] for i in range(len(jpegs))])
    out = np.concatenate([engine.run(reduced.batch[i:i + 1])[0] for i in range(len(jpegs))])
    accuracy = compare_outputs(source.spec.task, ref, out, GATE_RULES, gate or AccuracyGate())
    return ReducedDecodeVerdict(accuracy, tuple(reduced.reductions), len(jpegs))


def gate_jpegs(images: Path | None = None) -> list[bytes]:
    """The built-in photos and their mirrors as 12 MP JPEGs: what :func:`cached_verdict` judges on."""
    from hpi.preprocess.decode import decode_image
    from hpi.selection.measure import SAMPLE_IMAGES

    photos = [decode_image(p.read_bytes(), p.name) for p in sorted((images or SAMPLE_IMAGES).glob("*.jpg"))]
    return [photo_jpeg(np.ascontiguousarray(rgb[:, ::-1] if mirror else rgb))
            for rgb in photos for mirror in (False, True)]


def cached_verdict(source: ModelSource, device: Device, choice: BackendChoice, engine: Engine, gate: AccuracyGate,
                   cache: EngineCache) -> ReducedDecodeVerdict:
    """:func:`judge` for the high-performance engine of ``source``, once: cached as kind ``reduced-decode``, keyed
    on the model's bytes, the engine's backend and config, the machine and OpenCV (whose libjpeg decodes), the
    gate and :data:`RECIPE`."""
    parts: dict[str, Any] = {
        "model": source.content_hash, "backend": choice.backend, "config": choice.config.to_dict(),
        "device_signature": device_signature(device), "opencv": cv2.__version__,
        "gate": dataclasses.asdict(gate), "recipe": RECIPE,
    }
    found = cache.lookup("reduced-decode", parts)
    if found is None:
        verdict = judge(source, engine, gate_jpegs(), gate)

        def build(out: Path) -> None:
            (out / VERDICT_FILE).write_text(json.dumps(verdict.to_dict(), indent=2), encoding="utf-8")

        found = cache.get_or_build("reduced-decode", parts, build)
    return ReducedDecodeVerdict.from_dict(json.loads((found / VERDICT_FILE).read_text(encoding="utf-8")))
