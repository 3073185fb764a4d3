"""Turning what ``predict()`` accepts into a flat list of items, each read lazily with errors naming the item.

Accepted, as in PaddleX: a numpy array (HWC, BGR like ``cv2.imread``, or HW grayscale), a file path, an http(s)
URL, a directory (its images, sorted by name), ``{"img": ...}``, or a list of any of these. Also (hpi's addition)
an image file's encoded bytes, read as the file would be: a server that received them passes them on undecoded, so
the model decodes them on its preprocessing threads as it does files.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hpi.errors import HpiError, InvalidInputError
from hpi.preprocess.decode import decode_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2")
URL_TIMEOUT_S = 30.0
MAX_DOWNLOAD_BYTES = 64 << 20


@dataclass(frozen=True)
class InputItem:
    """One image to predict on: where it came from, and how to get its pixels."""

    index: int  # position in the flattened input
    input_path: str | None  # file path or URL; None for arrays and bytes (as PaddleX reports arrays)
    source: Any  # the path/URL string, the array, or the encoded bytes

    @property
    def label(self) -> str:
        """How error messages name this item."""
        if self.input_path is not None:
            return self.input_path
        return f"input[{self.index}] ({'bytes' if isinstance(self.source, bytes) else 'array'})"

    def read_bytes(self) -> bytes | None:
        """The encoded bytes of a file, URL or bytes item; None for arrays."""
        if isinstance(self.source, np.ndarray):
            return None
        if isinstance(self.source, bytes):
            return self.source
        if _is_url(self.source):
            return _download(self.source)
        try:
            with open(self.source, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise InvalidInputError(f"{self.source}: file not found") from None
        except OSError as exc:
            raise InvalidInputError(f"{self.source}: cannot read: {exc.strerror or exc}") from exc

    def load_rgb(self) -> np.ndarray:
        """Decoded RGB uint8 HWC pixels."""
        data = self.read_bytes()
        if data is None:
            return array_to_rgb(self.source, self.label)
        return decode_image(data, self.label)


def named_error(exc: HpiError, item: InputItem) -> HpiError:
    """The error with the item's name in front, unless it already starts with it."""
    if str(exc).startswith(item.label):
        return exc
    named = type(exc)(f"{item.label}: {exc}")
    named.__cause__ = exc
    return named


def array_to_rgb(array: np.ndarray, label: str) -> np.ndarray:
    """Validate a user array (BGR/BGRA/gray uint8, PaddleX's convention) and return RGB uint8 HWC."""
    if array.dtype != np.uint8:
        raise InvalidInputError(f"{label}: expected a uint8 image array, got dtype {array.dtype}")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidInputError(
            f"{label}: expected an HxWx3 (BGR), HxWx4 (BGRA) or HxW array, got shape {list(array.shape)}"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidInputError(f"{label}: empty image of shape {list(array.shape)}")
    code = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}[array.shape[2]]
    return cv2.cvtColor(np.ascontiguousarray(array), code)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as resp:  # noqa: S310 - scheme checked above
            data = resp.read(MAX_DOWNLOAD_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"{url}: download failed: {exc}") from exc
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise InvalidInputError(f"{url}: larger than {MAX_DOWNLOAD_BYTES >> 20} MiB")
    return data


def expand_inputs(inputs: Any) -> list[InputItem]:
    """Flatten ``inputs`` into items. Structural errors (a missing path, an unsupported type) raise at once,
    naming the item; unreadable *content* is reported later, per item, when it is read."""
    items: list[InputItem] = []
    for value in _walk(inputs, "input"):
        idx = len(items)
        if isinstance(value, np.ndarray | bytes):
            items.append(InputItem(idx, None, value))
        elif _is_url(value):
            path = urllib.parse.urlparse(value).path
            if path.lower().endswith(".pdf"):
                raise InvalidInputError(f"{value}: PDF input is not supported; pass images")
            items.append(InputItem(idx, value, value))
        else:
            items.append(InputItem(idx, str(value), str(value)))
    if not items:
        raise InvalidInputError("no input images: the input (or directory) is empty")
    return items


def _walk(value: Any, where: str) -> Iterator[Any]:
    if isinstance(value, dict):
        if "img" not in value:
            raise InvalidInputError(f"{where}: a dict input needs the key 'img', got keys {sorted(value)}")
        yield from _walk(value["img"], f"{where}['img']")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk(v, f"{where}[{i}]")
    elif isinstance(value, np.ndarray | bytes):
        yield value
    elif isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if _is_url(text):
            yield text
            return
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            for p in files:
                yield str(p)
        elif path.is_file():
            if path.suffix.lower() == ".pdf":
                raise InvalidInputError(f"{text}: PDF input is not supported; pass images")
            yield str(path)
        else:
            raise InvalidInputError(f"{text}: no such file or directory")
    else:
        raise InvalidInputError(
            f"{where}: unsupported input type {type(value).__name__}; "
            "expected a numpy array, a path, a URL, encoded image bytes, a directory, {'img': ...} or a list of these"
        )
