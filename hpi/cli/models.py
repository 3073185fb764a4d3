"""``hpi models``: the model cards as a table (aligned text, Markdown or CSV), filtered by family, task or core."""

from __future__ import annotations

import argparse
import csv
import io
import typing
from collections.abc import Iterable
from typing import Any, Literal

from hpi.cards import LatencyPair, ModelCard, Task, load_cards, select_cards
from hpi.cli.common import add_command
from hpi.errors import InvalidConfigError

TableFormat = Literal["text", "md", "csv"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi models`` to the main parser's subcommands."""
    return add_command(
        subparsers,
        "models",
        add_arguments,
        run,
        help="list the model cards (published accuracy, latency, size; measured params)",
        description="List PaddleX models with their published figures. Core models are marked with '*'.",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hpi models``."""
    parser.add_argument("--family", help="only this architecture family, e.g. PP-LCNet")
    parser.add_argument("--task", choices=typing.get_args(Task), help="only models of this task")
    parser.add_argument("--core", action="store_true", help="only the nine core classification models")
    parser.add_argument("--format", dest="fmt", choices=typing.get_args(TableFormat), default="text",
                        help="output format (default: text)")


def run(args: argparse.Namespace) -> int:
    """Print the table of the cards the filters select."""
    cards = select_cards(load_cards(), family=args.family, task=args.task, core=args.core)
    print(format_cards_table(cards, args.fmt), end="")
    return 0


_CSV_COLUMNS = (
    "name",
    "family",
    "task",
    "core",
    "top1",
    "recall_at_1",
    "map",
    "cpu_normal_ms",
    "cpu_hpi_ms",
    "gpu_normal_ms",
    "gpu_hpi_ms",
    "size_mb",
    "params",
    "flops",
    "buildable",
)
_TEXT_HEADER = (
    "name",
    "family",
    "task",
    "metric",
    "CPU ms normal/hpi",
    "GPU ms normal/hpi",
    "size MB",
    "params M",
    "buildable",
)


def format_cards_table(cards: Iterable[ModelCard], fmt: TableFormat = "text") -> str:
    """The cards as a table: aligned text, a Markdown table, or CSV with one number per column.

    Args:
        cards: the cards to list, in the order given.
        fmt: "text", "md" or "csv".

    Raises:
        InvalidConfigError: unknown ``fmt``.
    """
    rows = list(cards)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for c in rows:
            lat = c.latency
            writer.writerow(
                [
                    c.name,
                    c.family,
                    c.task,
                    c.core,
                    c.metrics.top1,
                    c.metrics.recall_at_1,
                    c.metrics.map,
                    lat.cpu_ms.normal,
                    lat.cpu_ms.hpi,
                    lat.gpu_ms.normal,
                    lat.gpu_ms.hpi,
                    c.size_mb,
                    c.params,
                    c.flops,
                    c.buildable,
                ]
            )
        return out.getvalue()
    if fmt not in ("text", "md"):
        raise InvalidConfigError(f"unknown table format {fmt!r}; available: text, md, csv")
    body = [_text_row(c) for c in rows]
    if fmt == "md":
        lines = ["| " + " | ".join(_TEXT_HEADER) + " |", "|" + "---|" * len(_TEXT_HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [_TEXT_HEADER, *body]) for i in range(len(_TEXT_HEADER))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [_TEXT_HEADER, *body]
    ]
    return "\n".join(lines) + "\n"


def _text_row(card: ModelCard) -> tuple[str, ...]:
    m = card.metrics
    if m.top1 is not None:
        metric = f"top1 {m.top1:g}"
    elif m.recall_at_1 is not None:
        metric = f"R@1 {m.recall_at_1:g}"
    elif m.map is not None:
        metric = f"mAP {m.map:g}"
    else:
        metric = "-"
    return (
        card.name + (" *" if card.core else ""),
        card.family,
        card.task,
        metric,
        _pair(card.latency.cpu_ms),
        _pair(card.latency.gpu_ms),
        "-" if card.size_mb is None else f"{card.size_mb:g}",
        "-" if card.params is None else f"{card.params / 1e6:.2f}",
        "yes" if card.buildable else "no",
    )


def _pair(pair: LatencyPair) -> str:
    def one(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"  # the seeds print latency with two decimals

    return f"{one(pair.normal)} / {one(pair.hpi)}"
