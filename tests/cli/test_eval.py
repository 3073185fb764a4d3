"""hpi/cli/eval.py: ``hpi eval`` prints both modes' accuracy as a table or JSON."""

from __future__ import annotations

import json

from hpi.cli import main


def test_eval_cli_prints_both_modes(orientation_dir, orientation_dataset, tmp_path, capsys):
    argv = ["eval", "--model", "PP-LCNet_x1_0_doc_ori", "--model-dir", str(orientation_dir),
            "--dataset", str(orientation_dataset), "--threads", "1", "--cache-dir", str(tmp_path)]
    assert main([*argv, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 12 and out["top1_agreement"] == 1.0
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "(12 samples)" in text and "| high-performance |" in text and "agreement between the modes: 1.0000" in text
