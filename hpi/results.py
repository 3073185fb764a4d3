"""Result objects with PaddleX's interface: ``print()``, ``save_to_json()``, ``save_to_img()``, ``.json``, ``.img``.

A result is a dict of its fields (``res["class_ids"]``); ``.json`` is ``{"res": fields}`` as PaddleX prints it.
Fields whose name starts with ``_`` (the decoded input image) are kept out of JSON.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hpi.errors import InvalidConfigError
from hpi.storage import write_file_atomic


def to_jsonable(value: Any) -> Any:
    """numpy scalars and arrays to plain Python, recursively; NaN/inf become None (valid JSON)."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class BaseResult(dict):
    """Common behaviour of every result type."""

    default_suffix = ".jpg"

    @property
    def json(self) -> dict[str, Any]:
        return {"res": to_jsonable(dict(self))}

    @property
    def img(self) -> dict[str, Image.Image]:
        return {"res": self._draw()}

    def _draw(self) -> Image.Image:
        raise NotImplementedError

    def source_image(self) -> np.ndarray:
        """The input as RGB uint8 HWC: kept for array inputs, read again on demand for files and URLs."""
        image = self.get("_image")
        if image is None:
            image = self["_loader"]()
            self["_image"] = image
        return image

    def __str__(self) -> str:
        return json.dumps(self.json, indent=4, ensure_ascii=False)

    def print(self, format_json: bool = True, indent: int = 4, ensure_ascii: bool = False) -> None:
        """Print to stdout, as PaddleX does: indented JSON by default, else the Python repr."""
        if format_json:
            print(json.dumps(self.json, indent=indent, ensure_ascii=ensure_ascii))
        else:
            print(self.json)

    def _target(self, save_path: str | os.PathLike, suffix: str) -> Path:
        """A directory (existing, or given without a suffix) gets a file named after the input."""
        path = Path(save_path)
        if path.is_dir() or not path.suffix:
            stem = Path(urlpath_name(self.get("input_path"))).stem or f"res_{self.get('_index', 0)}"
            path = path / f"{stem}_res{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def save_to_json(self, save_path: str | os.PathLike, indent: int = 4, ensure_ascii: bool = False) -> Path:
        """Write ``.json`` to ``save_path`` (a file, or a directory to name it after the input). Returns the path."""
        path = self._target(save_path, ".json")
        text = json.dumps(self.json, indent=indent, ensure_ascii=ensure_ascii)
        return write_file_atomic(path, text.encode("utf-8"), locked=False)

    def save_to_img(self, save_path: str | os.PathLike) -> Path:
        """Write the visualisation to ``save_path`` (a file, or a directory to name it after the input)."""
        path = self._target(save_path, self.default_suffix)
        encoded = io.BytesIO()
        try:
            self._draw().save(encoded, format=Image.registered_extensions().get(path.suffix.lower()))
        except (KeyError, ValueError) as exc:
            raise InvalidConfigError(f"save_to_img: cannot write an image named {path.name}: {exc}") from exc
        return write_file_atomic(path, encoded.getvalue(), locked=False)


def urlpath_name(input_path: str | None) -> str:
    if not input_path:
        return ""
    return Path(input_path.split("?", 1)[0]).name


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


class ClassificationResult(BaseResult):
    """``input_path, page_index, class_ids, scores, label_names`` (+ ``weights`` when the model is seeded)."""

    def _draw(self) -> Image.Image:
        image = Image.fromarray(self.source_image()).convert("RGB")
        draw = ImageDraw.Draw(image)
        size = max(12, image.width // 30)
        font = _font(size)
        names = self.get("label_names") or [str(c) for c in self["class_ids"]]
        lines = [f"{name.split(',')[0]} {score:.2f}" for name, score in zip(names, self["scores"])]
        y = 2
        for line in lines:
            box = draw.textbbox((4, y), line, font=font)
            draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
            draw.text((4, y), line, fill=(255, 255, 0), font=font)
            y = box[3] + 6
        return image


class EmbeddingResult(BaseResult):
    """``input_path, page_index, feature`` (L2-normalised)."""

    def _draw(self) -> Image.Image:
        return Image.fromarray(self.source_image()).convert("RGB")


class DetResult(BaseResult):
    """``input_path, page_index, boxes: [{cls_id, label, score, coordinate}]`` (+ ``weights`` when seeded)."""

    def _draw(self) -> Image.Image:
        return draw_boxes(self.source_image(), [
            (b["coordinate"], f"{b['label']} {b['score']:.2f}", colour_for(b["label"])) for b in self["boxes"]
        ])


class ShiTuResult(BaseResult):
    """``input_path, boxes: [{labels, rec_scores, det_score, coordinate}]`` (+ ``weights`` when seeded)."""

    def _draw(self) -> Image.Image:
        return draw_boxes(self.source_image(), [
            (b["coordinate"], f"{b['labels'][0]} {b['rec_scores'][0]:.2f}", colour_for(b["labels"][0]))
            for b in self["boxes"]
        ])


_PALETTE = ((255, 56, 56), (56, 56, 255), (56, 200, 56), (255, 157, 151), (255, 112, 31), (146, 204, 23),
            (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255), (52, 69, 147))


def colour_for(key: str) -> tuple[int, int, int]:
    """A stable colour per label (not Python's salted ``hash``)."""
    return _PALETTE[sum(key.encode("utf-8")) % len(_PALETTE)]


def draw_boxes(rgb: np.ndarray, boxes: Sequence[tuple[Sequence[float], str, tuple[int, int, int]]]) -> Image.Image:
    """``rgb`` with each (coordinate, caption, colour) drawn as a rectangle and a caption above it."""
    image = Image.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(image)
    size = max(12, min(image.size) // 40)
    font = _font(size)
    width = max(2, min(image.size) // 200)
    for (x1, y1, x2, y2), caption, colour in boxes:
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        if caption:
            # Above the box when there is room, else just inside its top edge.
            tx, ty = x1 + width, (y1 - size - 2 * width if y1 >= size + 2 * width else y1 + width)
            box = draw.textbbox((tx, ty), caption, font=font)
            draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=colour)
            draw.text((tx, ty), caption, fill=(255, 255, 255), font=font)
    return image
