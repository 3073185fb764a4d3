"""Tests of hpi/retrieval/gallery.py: reading PaddleX gallery.txt files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpi.errors import InvalidInputError
from hpi.retrieval.gallery import read_gallery

# --------------------------------------------------------------------------------------------- gallery.txt


def _gallery(tmp_path: Path, text: str, images=("0/0.jpg", "0/1.jpg", "my photos/2.jpg")) -> Path:
    for image in images:
        (tmp_path / image).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / image).write_bytes(b"jpeg")
    gallery = tmp_path / "gallery.txt"
    gallery.write_bytes(text.encode("utf-8"))
    return gallery


def test_read_gallery_accepts_tab_space_bom_crlf_and_blank_lines(tmp_path):
    gallery = _gallery(
        tmp_path, "\ufeff0/0.jpg 脉动\r\n\r\n0/1.jpg\tRed Bull - 强化型\r\nmy photos/2.jpg\tCoca Cola\n"
    )
    assert read_gallery(gallery) == [
        (tmp_path / "0/0.jpg", "脉动"),
        (tmp_path / "0/1.jpg", "Red Bull - 强化型"),
        (tmp_path / "my photos/2.jpg", "Coca Cola"),
    ]


def test_read_gallery_resolves_against_image_root(tmp_path):
    (tmp_path / "labels").mkdir()
    gallery = _gallery(tmp_path, "0/0.jpg a\n")
    moved = gallery.rename(tmp_path / "labels" / "gallery.txt")
    assert read_gallery(moved, image_root=tmp_path) == [(tmp_path / "0/0.jpg", "a")]
    with pytest.raises(InvalidInputError, match=r"gallery.txt:1: image .*0/0.jpg does not exist"):
        read_gallery(moved)
    assert read_gallery(moved, check_exists=False) == [(tmp_path / "labels" / "0/0.jpg", "a")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/0.jpg a\n0/1.jpg\n", r"gallery.txt:2: expected '<image path><tab or space><label>'"),
        ("0/0.jpg a\n\n0/1.jpg\tb\tc\n", r"gallery.txt:3: expected '<image path><tab><label>', got 3"),
        ("0/0.jpg\t\n", r"gallery.txt:1: expected"),
        ("0/0.jpg a\n0/9.jpg b\n", r"gallery.txt:2: image .*0/9.jpg does not exist"),
        ("\n  \n", r"lists no images"),
    ],
)
def test_read_gallery_names_the_bad_line(tmp_path, text, message):
    with pytest.raises(InvalidInputError, match=message):
        read_gallery(_gallery(tmp_path, text))


def test_read_gallery_reports_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_gallery(tmp_path / "gallery.txt")
    gallery = tmp_path / "gallery.txt"
    gallery.write_bytes(b"0/0.jpg a\n0/1.jpg " + "饮料".encode("gbk") + b"\n")
    with pytest.raises(InvalidInputError, match=r"gallery.txt:2: not UTF-8"):
        read_gallery(gallery)
