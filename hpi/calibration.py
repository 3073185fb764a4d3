"""Calibration sets for int8 quantisation: which images, checked and hashed, and their tensors the model's way.

A calibration set is a directory of images (``hpi_config={"calibration_data": DIR}``, ``hpi export --calibrate
DIR``) or, by default, the built-in photos (``hpi/data/images``). Its identity is the content hash of its files
(names and bytes), never its path: it goes into the cache key of every int8 artefact built from it and into the
decision key, so changing the set rebuilds the int8 engines and measures the selection again.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpi.errors import InvalidConfigError, InvalidInputError
from hpi.inputs import IMAGE_SUFFIXES

BUILTIN_IMAGES = Path(__file__).resolve().parent / "data" / "images"
MAX_IMAGES = 300  # more images calibrate no better for post-training quantisation and only take longer


@dataclass(frozen=True)
class CalibrationSet:
    """The images int8 engines are calibrated on, and their identity."""

    directory: Path  # where the images are (the built-in photos' directory by default)
    files: tuple[Path, ...]  # the images used, sorted by name (at most MAX_IMAGES)
    content_hash: str  # sha256 of every file's name and bytes: part of every int8 cache key
    builtin: bool  # the built-in photos (no calibration_data given)

    @property
    def label(self) -> str:
        """One line for records: ``built-in photos (4 images, 3f2a...)`` or ``/data/calib (16 images, ...)``."""
        where = "built-in photos" if self.builtin else str(self.directory)
        return f"{where} ({len(self.files)} images, {self.content_hash[:12]})"

    def key(self) -> dict[str, object]:
        """What the set contributes to cache and decision keys."""
        return {"content": self.content_hash, "images": len(self.files)}

    def images(self) -> list[np.ndarray]:
        """The images decoded, RGB uint8 HWC, in file-name order."""
        return [_decode(path) for path in self.files]

    def tensors(self, spec: object) -> np.ndarray:
        """The images decoded and preprocessed the model's own way (``spec``: its
        :class:`~hpi.preprocess.spec.PreprocessSpec`), as one float32 batch."""
        from hpi.preprocess.reference import preprocess_batch

        if spec is None:
            raise InvalidConfigError("int8 calibration needs the model's image preprocessing (inference.yml)")
        return preprocess_batch(spec, self.images())  # type: ignore[arg-type]


def _decode(path: Path, option: str = "calibration_data") -> np.ndarray:
    from hpi.preprocess.decode import decode_image

    try:
        return decode_image(path.read_bytes(), str(path))
    except (InvalidInputError, OSError) as exc:
        raise InvalidConfigError(f"{option}: cannot decode image {path}: {exc}") from exc


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def check_calibration_dir(directory: str | os.PathLike[str], option: str = "calibration_data") -> Path:
    """``directory`` as an absolute path, after checking that it exists and holds images that all decode (each
    image is decoded once per process while its size and modification time stay the same). ``option`` is the
    ``hpi_config`` key the directory came from (``calibration_data``, ``gate_data``), for the messages.

    Raises:
        InvalidConfigError: naming the directory when it is missing, not a directory or holds no images, and
            naming the image when one does not decode.
    """
    path = Path(directory).expanduser()
    if not path.exists():
        raise InvalidConfigError(f"{option}: directory {path} does not exist")
    if not path.is_dir():
        raise InvalidConfigError(f"{option}: {path} is not a directory of images")
    files = _image_files(path)
    if not files:
        raise InvalidConfigError(
            f"{option}: directory {path} holds no images (expected files ending in {', '.join(IMAGE_SUFFIXES)})")
    for file in files[:MAX_IMAGES]:
        stat = file.stat()
        _check_decodes(file.resolve(), stat.st_size, stat.st_mtime_ns, option)
    return path.resolve()


@functools.lru_cache(maxsize=4096)
def _check_decodes(path: Path, size: int, mtime_ns: int, option: str) -> None:
    """Decode ``path`` once per (size, modification time): raises if it does not decode."""
    _decode(path, option)


def calibration_set(directory: str | os.PathLike[str] | None = None, option: str = "calibration_data"
                    ) -> CalibrationSet:
    """The image set of ``directory`` (checked by :func:`check_calibration_dir`), or the built-in photos. The
    accuracy gate's own images (``hpi_config.gate_data``) are a set of the same kind (``option="gate_data"``)."""
    builtin = directory is None
    path = BUILTIN_IMAGES if builtin else check_calibration_dir(directory, option)  # type: ignore[arg-type]
    files = tuple(_image_files(path)[:MAX_IMAGES])
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return CalibrationSet(path, files, digest.hexdigest(), builtin)
