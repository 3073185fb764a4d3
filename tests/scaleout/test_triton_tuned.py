"""``hpi export --format triton --tuned RECORD``: an hpi tune record's values land in config.pbtxt (parsed with
Triton's own schema), and records that are not for Triton, or for another model, are refused."""

from __future__ import annotations

import json

import pytest

from hpi.cli import main
from hpi.errors import InvalidConfigError
from hpi.scaleout.triton import TritonExportOptions, apply_tuned, read_tune_record
from tests.scaleout.tritonserver import parse_config

RECORD = {"kind": "hpi-tune", "version": 1, "target": "triton", "model": "ToyNet", "backend": "onnxruntime",
          "precision": "fp32",
          "deployment": {"instances": 2, "threads": 1, "max_batch_size": 8, "batch_delay_ms": 2.5,
                         "preferred_batch_sizes": [4, 8], "streams": None}}


def write_record(tmp_path, **changes):
    record = json.loads(json.dumps(RECORD))
    deployment = changes.pop("deployment", {})
    record.update(changes)
    record["deployment"].update(deployment)
    path = tmp_path / "tune.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def test_record_becomes_export_options(tmp_path):
    tuned = read_tune_record(write_record(tmp_path))
    options = apply_tuned(TritonExportOptions(), tuned, "ToyNet")
    assert (options.instances, options.threads_per_instance, options.max_batch_size) == (2, 1, 8)
    assert options.max_queue_delay_us == 2500 and options.preferred_batch_sizes == (4, 8)
    assert options.tuned_from == str(tmp_path / "tune.json")


@pytest.mark.parametrize(("changes", "message"), [
    ({"kind": "hpi-decision"}, "expected kind 'hpi-tune'"),
    ({"target": "serve"}, "tuned for target 'serve', expected 'triton'"),
    ({"version": 2}, "format version 2; this hpi reads version 1"),
    ({"deployment": {"instances": 0}}, "deployment.instances: expected a positive integer, got 0"),
    ({"deployment": {"batch_delay_ms": "fast"}}, "deployment.batch_delay_ms: expected a non-negative number"),
])
def test_bad_records_are_refused_with_a_message(tmp_path, changes, message):
    with pytest.raises(InvalidConfigError, match=message):
        read_tune_record(write_record(tmp_path, **changes))


def test_record_for_another_model_or_oversized_preference_is_refused(tmp_path):
    tuned = read_tune_record(write_record(tmp_path))
    with pytest.raises(InvalidConfigError, match="is for model 'ToyNet', not 'PP-LCNet_x1_0'"):
        apply_tuned(TritonExportOptions(), tuned, "PP-LCNet_x1_0")
    big = read_tune_record(write_record(tmp_path, deployment={"preferred_batch_sizes": [16]}))
    with pytest.raises(InvalidConfigError, match="preferred_batch_sizes: 16 is larger than max_batch_size 8"):
        apply_tuned(TritonExportOptions(), big, "ToyNet")
    (tmp_path / "not-json.json").write_text("{", encoding="utf-8")
    with pytest.raises(InvalidConfigError, match="cannot read it as JSON"):
        read_tune_record(tmp_path / "not-json.json")


@pytest.mark.slow
def test_export_cli_writes_the_tuned_values_into_config_pbtxt(triton_selection, tmp_path, capsys):
    sel = triton_selection
    record = write_record(tmp_path)
    base = ["export", "--format", "triton", "--model", "ToyNet", "--model-dir", str(sel.source.directory),
            "--threads", "2", "--cache-dir", str(sel.cache.root), "--tuned", str(record)]
    assert main([*base, "--output", str(tmp_path / "repo")]) == 0
    out = capsys.readouterr().out
    assert "x2, 1 thread(s) each" in out and f"from the tune record {record}" in out
    engine = parse_config(tmp_path / "repo" / "ToyNet" / "config.pbtxt")
    assert engine.max_batch_size == 8
    assert engine.dynamic_batching.max_queue_delay_microseconds == 2500
    assert list(engine.dynamic_batching.preferred_batch_size) == [4, 8]
    (group,) = engine.instance_group
    assert group.count == 2 and group.kind == group.KIND_CPU
    assert engine.parameters["intra_op_thread_count"].string_value == "1"
    for model in ("ToyNet_preprocess", "ToyNet_postprocess", "ToyNet_ensemble"):
        assert parse_config(tmp_path / "repo" / model / "config.pbtxt").max_batch_size == 8
    manifest = json.loads((tmp_path / "repo" / "hpi_manifest.json").read_text(encoding="utf-8"))
    assert manifest["tuned_from"] == str(record)

    # A flag the record sets, given as well, is refused rather than silently overridden.
    assert main([*base, "--instances", "4", "--output", str(tmp_path / "repo2")]) == 2
    assert "--instances with --tuned: the tune record sets them; drop it" in capsys.readouterr().err
    serve_record = write_record(tmp_path, target="serve")
    assert main([*base[:-1], str(serve_record), "--output", str(tmp_path / "repo3")]) == 2
    assert "tuned for target 'serve', expected 'triton'" in capsys.readouterr().err
