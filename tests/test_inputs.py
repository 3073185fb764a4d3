"""hpi/inputs.py: what ``predict()`` accepts, flattened into items that are read lazily, errors naming the item."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from hpi import inputs
from hpi.errors import InvalidInputError
from hpi.inputs import InputItem, array_to_rgb, expand_inputs, named_error


def _bgr(h: int = 6, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Images in mixed-case suffixes (written out of name order), a non-image, a sub-folder and a PDF."""
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("c.png", "a.PNG", "b.jpg"):
        (d / name).write_bytes(_png(_bgr()))
    (d / "notes.txt").write_text("not an image")
    (d / "scan.pdf").write_bytes(b"%PDF-1.4")
    (d / "sub.png").mkdir()  # a folder with an image-like name is no image
    return d


# ------------------------------------------------------------------------------------------- expanding inputs


def test_a_directory_expands_to_its_images_sorted_by_name(folder: Path):
    items = expand_inputs(folder)
    assert [Path(i.input_path).name for i in items] == ["a.PNG", "b.jpg", "c.png"]
    assert [i.index for i in items] == [0, 1, 2]
    assert all(i.source == i.input_path for i in items)


def test_nested_lists_dicts_arrays_bytes_and_urls_flatten_in_order(folder: Path):
    array, data = _bgr(), b"\x89PNG not read yet"
    items = expand_inputs([{"img": str(folder / "b.jpg")}, [array, (data,)], "https://example.com/x.jpg?s=1",
                           folder / "c.png"])
    assert [i.index for i in items] == list(range(5))
    assert items[0].input_path == str(folder / "b.jpg")
    assert items[1].input_path is None and items[1].source is array
    assert items[2].input_path is None and items[2].source == data
    assert items[3].input_path == items[3].source == "https://example.com/x.jpg?s=1"  # not fetched here
    assert items[4].input_path == str(folder / "c.png")  # a PathLike becomes its string


def test_a_single_input_of_each_kind_is_one_item(tmp_path: Path):
    path = tmp_path / "one.png"
    path.write_bytes(_png(_bgr()))
    assert [i.input_path for i in expand_inputs(str(path))] == [str(path)]
    assert len(expand_inputs(_bgr())) == 1
    assert len(expand_inputs({"img": [_bgr(), _bgr()]})) == 2


def test_structural_errors_raise_at_once_naming_the_item(tmp_path: Path):
    with pytest.raises(InvalidInputError, match=r"nope\.jpg: no such file or directory"):
        expand_inputs([_bgr(), str(tmp_path / "nope.jpg")])
    with pytest.raises(InvalidInputError, match=r"input\[1\]: unsupported input type int"):
        expand_inputs([_bgr(), 7])
    with pytest.raises(InvalidInputError, match=r"input\[0\]\['img'\]\[1\]: unsupported input type float"):
        expand_inputs([{"img": [_bgr(), 1.5]}])
    with pytest.raises(InvalidInputError, match=r"needs the key 'img', got keys \['image'\]"):
        expand_inputs({"image": _bgr()})


def test_pdf_is_refused_as_a_file_and_as_a_url(tmp_path: Path):
    pdf = tmp_path / "doc.PDF"
    pdf.write_bytes(b"%PDF-1.4")
    with pytest.raises(InvalidInputError, match="PDF input is not supported"):
        expand_inputs(pdf)
    with pytest.raises(InvalidInputError, match="PDF input is not supported"):
        expand_inputs("http://example.com/files/doc.pdf?download=1")


@pytest.mark.parametrize("empty", [[], (), {"img": []}])
def test_no_input_is_an_error(empty):
    with pytest.raises(InvalidInputError, match="no input images"):
        expand_inputs(empty)


def test_a_directory_without_images_is_an_error(tmp_path: Path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="no input images"):
        expand_inputs(tmp_path)


# ------------------------------------------------------------------------------------------- reading an item


def test_labels_name_paths_and_positions():
    assert InputItem(0, "/data/cat.jpg", "/data/cat.jpg").label == "/data/cat.jpg"
    assert InputItem(3, None, _bgr()).label == "input[3] (array)"
    assert InputItem(4, None, b"abc").label == "input[4] (bytes)"


def test_a_file_item_reads_its_bytes_and_decodes_to_rgb(tmp_path: Path):
    bgr = _bgr(seed=1)
    path = tmp_path / "x.png"
    path.write_bytes(_png(bgr))
    (item,) = expand_inputs(path)
    assert item.read_bytes() == path.read_bytes()
    np.testing.assert_array_equal(item.load_rgb(), bgr[:, :, ::-1])


def test_a_bytes_item_decodes_as_the_file_would(tmp_path: Path):
    bgr = _bgr(seed=2)
    (item,) = expand_inputs(_png(bgr))
    assert item.read_bytes() == _png(bgr)
    np.testing.assert_array_equal(item.load_rgb(), bgr[:, :, ::-1])


def test_an_array_item_has_no_bytes_and_converts_bgr_to_rgb():
    bgr = _bgr(seed=3)
    (item,) = expand_inputs(bgr)
    assert item.read_bytes() is None
    np.testing.assert_array_equal(item.load_rgb(), bgr[:, :, ::-1])


def test_a_file_removed_after_expansion_fails_when_read_naming_it(tmp_path: Path):
    path = tmp_path / "gone.png"
    path.write_bytes(_png(_bgr()))
    (item,) = expand_inputs(path)
    path.unlink()
    with pytest.raises(InvalidInputError, match=r"gone\.png: file not found"):
        item.read_bytes()


def test_an_unreadable_path_is_an_input_error_not_an_oserror(tmp_path: Path):
    folder = tmp_path / "dir.png"
    folder.mkdir()
    with pytest.raises(InvalidInputError, match=r"dir\.png: cannot read"):
        InputItem(0, str(folder), str(folder)).read_bytes()


def test_undecodable_bytes_fail_naming_the_item():
    (item,) = expand_inputs(b"definitely not an image")
    with pytest.raises(InvalidInputError, match=r"input\[0\] \(bytes\)"):
        item.load_rgb()


# ------------------------------------------------------------------------------------------------ arrays


def test_array_conversions_follow_the_cv2_convention():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(array_to_rgb(gray, "g"), np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(array_to_rgb(gray[:, :, None], "g1"), np.repeat(gray[:, :, None], 3, axis=2))
    bgra = np.dstack([_bgr(3, 4), np.full((3, 4), 7, np.uint8)])
    out = array_to_rgb(bgra, "a")
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out, bgra[:, :, 2::-1])  # alpha dropped, BGR reversed
    view = _bgr(6, 8)[:, ::2]  # not contiguous
    np.testing.assert_array_equal(array_to_rgb(view, "v"), view[:, :, ::-1])


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 4, 3), np.float32), r"pic: expected a uint8 image array, got dtype float32"),
        (np.zeros((4, 4, 2), np.uint8), r"pic: expected an HxWx3 \(BGR\).*got shape \[4, 4, 2\]"),
        (np.zeros((2, 4, 4, 3), np.uint8), r"got shape \[2, 4, 4, 3\]"),
        (np.zeros((0, 4, 3), np.uint8), r"pic: empty image of shape \[0, 4, 3\]"),
    ],
)
def test_bad_arrays_are_refused_naming_the_item(array, message):
    with pytest.raises(InvalidInputError, match=message):
        array_to_rgb(array, "pic")


# ------------------------------------------------------------------------------------------------ errors


def test_named_error_prefixes_the_label_once_and_keeps_the_type():
    item = InputItem(2, None, _bgr())
    bare = InvalidInputError("truncated")
    named = named_error(bare, item)
    assert type(named) is InvalidInputError
    assert str(named) == "input[2] (array): truncated" and named.__cause__ is bare
    assert named_error(named, item) is named  # already named: unchanged


# ------------------------------------------------------------------------------------------------ URLs


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        body = self.files.get(self.path.split("?", 1)[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_files() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A loopback HTTP server for the files the test puts in the dict; stopped after the test."""
    files: dict[str, bytes] = {}
    handler = type("Handler", (_Files,), {"files": files})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_url_is_downloaded_when_read(http_files, monkeypatch):
    monkeypatch.setattr(inputs, "URL_TIMEOUT_S", 10.0)
    base, files = http_files
    bgr = _bgr(seed=4)
    files["/img/cat.png"] = _png(bgr)
    (item,) = expand_inputs(f"{base}/img/cat.png?size=small")
    assert item.input_path == f"{base}/img/cat.png?size=small"
    np.testing.assert_array_equal(item.load_rgb(), bgr[:, :, ::-1])


def test_a_failed_download_names_the_url(http_files, monkeypatch):
    monkeypatch.setattr(inputs, "URL_TIMEOUT_S", 10.0)
    base, _ = http_files
    (item,) = expand_inputs(f"{base}/missing.jpg")
    with pytest.raises(InvalidInputError, match=r"/missing\.jpg: download failed: HTTP Error 404"):
        item.read_bytes()


def test_a_download_over_the_limit_is_refused(http_files, monkeypatch):
    monkeypatch.setattr(inputs, "URL_TIMEOUT_S", 10.0)
    monkeypatch.setattr(inputs, "MAX_DOWNLOAD_BYTES", 1 << 20)
    base, files = http_files
    files["/big.png"] = b"\0" * ((1 << 20) + 1)
    files["/fits.png"] = b"\0" * (1 << 20)
    with pytest.raises(InvalidInputError, match=r"big\.png: larger than 1 MiB"):
        expand_inputs(f"{base}/big.png")[0].read_bytes()
    assert len(expand_inputs(f"{base}/fits.png")[0].read_bytes()) == 1 << 20  # exactly the limit is allowed
