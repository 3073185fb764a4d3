"""hpi/evaluate.py: top-1 / top-5 of both modes on a labelled dataset (real weights), and the dataset's errors."""

from __future__ import annotations

import pytest

from hpi.errors import InvalidInputError
from hpi.evaluate import evaluate, read_dataset


@pytest.mark.realweights
def test_eval_normal_vs_high_performance_on_real_weights(orientation_dir, orientation_dataset, tmp_path):
    report = evaluate("PP-LCNet_x1_0_doc_ori", orientation_dataset, model_dir=str(orientation_dir),
                      device="cpu", hpi_config={"threads": 1}, cache_dir=str(tmp_path))
    assert report.samples == 12
    assert report.normal["top1"] == 1.0 and report.high_performance["top1"] == 1.0
    assert report.normal["top5"] == 1.0 and report.top1_agreement == 1.0
    assert report.normal["backend"].startswith("onnxruntime[fp32]")  # ONNX model: ORT is the reference


def test_dataset_errors_name_the_line(tmp_path):
    with pytest.raises(InvalidInputError, match="val.txt is missing"):
        read_dataset(tmp_path)
    (tmp_path / "val.txt").write_text("a.jpg 0\nb.jpg\n")
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match=r"val.txt:2: expected 'path label'"):
        read_dataset(tmp_path)
    (tmp_path / "val.txt").write_text("missing.jpg 3\n")
    with pytest.raises(InvalidInputError, match=r"val.txt:1: .*missing.jpg does not exist"):
        read_dataset(tmp_path)


def test_dataset_reads_paths_labels_and_names(orientation_dataset):
    items, names = read_dataset(orientation_dataset)
    assert len(items) == 12 and names == ["0", "90", "180", "270"]
    assert all(path.is_file() and 0 <= label < 4 for path, label in items)
