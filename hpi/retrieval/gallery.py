"""Reading a PaddleX ``gallery.txt``: the image paths and labels a PP-ShiTuV2 feature index is built from."""

from __future__ import annotations

import os
from pathlib import Path

from hpi.errors import InvalidInputError


def read_gallery(
    path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    check_exists: bool = True,
) -> list[tuple[Path, str]]:
    """Read a PaddleX ``gallery.txt``: one ``<image path> <label>`` per line.

    The image path and the label are separated by a tab or, on lines without a tab, by the first space (so labels
    may contain spaces; image paths with spaces need the tab). Blank lines are skipped. Image paths are relative
    to ``image_root``, which defaults to the file's directory (PaddleX's ``gallery_imgs``).

    Args:
        path: the gallery file, UTF-8 (a BOM is accepted).
        image_root: directory the image paths are relative to.
        check_exists: raise when a listed image is not a file.

    Returns:
        ``(image path, label)`` pairs in file order.

    Raises:
        InvalidInputError: the file is unreadable or empty, or a line is malformed or names a missing image; the
            message gives ``file:line``.
    """
    gallery = Path(path)
    root = gallery.parent if image_root is None else Path(image_root)
    try:
        data = gallery.read_bytes()
    except FileNotFoundError as exc:
        raise InvalidInputError(f"gallery file {gallery} does not exist") from exc
    except OSError as exc:
        raise InvalidInputError(f"cannot read gallery file {gallery}: {exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInputError(f"{gallery}:{line}: not UTF-8 text ({exc.reason})") from exc

    pairs: list[tuple[Path, str]] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r").strip()
        if not line:
            continue
        if "\t" in line:
            fields = [field.strip() for field in line.split("\t")]
            if len(fields) != 2:
                raise InvalidInputError(
                    f"{gallery}:{number}: expected '<image path><tab><label>', got {len(fields)} tab-separated "
                    f"fields: {raw!r}"
                )
            image, label = fields
        else:
            image, _, label = line.partition(" ")
            label = label.strip()
        if not image or not label:
            raise InvalidInputError(
                f"{gallery}:{number}: expected '<image path><tab or space><label>', got {raw!r}"
            )
        image_path = root / image
        if check_exists and not image_path.is_file():
            raise InvalidInputError(f"{gallery}:{number}: image {image_path} does not exist")
        pairs.append((image_path, label))
    if not pairs:
        raise InvalidInputError(f"gallery file {gallery} lists no images")
    return pairs
