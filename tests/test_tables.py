"""Every markdown table hpi writes has as many cells in each row as its header has columns, so it renders in any
markdown viewer: ``hpi bench``'s tables (one model and several, from real benchmark records), ``hpi models --format
md``, the result files the benchmark scripts wrote, and the README and docs pages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpi.bench.report import format_markdown, load_benches

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# The per-CPU core tables benchmarks/run_core.py wrote with format_json: real selection records to render again.
BENCH_JSON = sorted(RESULTS.glob("core-*.json"))


def split_row(line: str) -> list[str]:
    """The cells of one markdown table row: ``|`` separates cells except escaped (``\\|``) or inside a code span."""
    cells, cell, in_code, i = [], "", False, 0
    text = line.strip()
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cell += text[i:i + 2]
            i += 2
            continue
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code:
            cells.append(cell)
            cell = ""
        else:
            cell += ch
        i += 1
    cells.append(cell)
    # A row's leading and trailing pipes leave an empty first and last piece.
    if text.startswith("|"):
        cells = cells[1:]
    if text.endswith("|") and not text.endswith("\\|"):
        cells = cells[:-1]
    return [c.strip() for c in cells]


def table_problems(text: str) -> list[str]:
    """Each row of each table in ``text`` whose cell count differs from its header's, as 'line N: M cells under K
    headers'. A table is a header row followed by a ``|---|`` delimiter row; it ends at the first line that is not a
    row."""
    problems: list[str] = []
    lines = text.splitlines()
    in_code = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_code = not in_code
        delimiter = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if not in_code and line.strip().startswith("|") and delimiter.startswith("|") and set(delimiter) <= set("|-: "):
            width = len(split_row(line))
            j = i + 1
            while j < len(lines) and lines[j].strip().startswith("|"):
                n = len(split_row(lines[j]))
                if n != width:
                    problems.append(f"line {j + 1}: {n} cells under {width} headers: {lines[j][:120]}")
                j += 1
            i = j
            continue
        i += 1
    return problems


def test_split_row_and_problems_find_a_broken_table():
    assert split_row("| a | `x | y` | b \\| c |") == ["a", "`x | y`", "b \\| c"]
    good = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    bad = "| a | b |\n|---|---|\n| 1 | 2 | 3 |\n"
    assert table_problems(good) == []
    assert table_problems(bad) == ["line 3: 3 cells under 2 headers: | 1 | 2 | 3 |"]
    assert table_problems("```\n| a | b |\n|---|---|\n| 1 |\n```\n") == []  # code blocks are not tables


def test_there_are_bench_records_to_render():
    assert len(BENCH_JSON) >= 3


@pytest.mark.parametrize("path", BENCH_JSON, ids=lambda p: p.name)
def test_hpi_bench_tables_of_one_model_have_a_header_per_cell(path):
    # `hpi bench --model M` renders exactly one model: every table of it (summary, not-passing, every candidate,
    # stage split) must keep its columns.
    for bench in load_benches(path):
        text = format_markdown([bench])
        assert "| target |" in text  # the summary table's last header
        assert table_problems(text) == [], f"{bench.model} from {path.name}"


@pytest.mark.parametrize("path", BENCH_JSON, ids=lambda p: p.name)
def test_hpi_bench_tables_of_several_models_have_a_header_per_cell(path):
    text = format_markdown(load_benches(path))
    assert text.count("\n|") > 10
    assert table_problems(text) == []


def test_hpi_models_markdown_table_has_a_header_per_cell():
    from hpi.cards import load_cards, select_cards
    from hpi.cli.models import format_cards_table

    text = format_cards_table(select_cards(load_cards()), "md")  # as `hpi models --format md` does
    assert text.count("\n") > 80  # every card is a row
    assert table_problems(text) == []


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.md")), ids=lambda p: p.name)
def test_benchmark_result_files_have_a_header_per_cell(path):
    assert table_problems(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_documentation_tables_have_a_header_per_cell(path):
    assert table_problems(path.read_text(encoding="utf-8")) == []
