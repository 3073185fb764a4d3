"""Model cards: what PaddleX publishes about each model, plus what hpi measured, as typed records.

One YAML file per model lives in ``hpi/data/model_cards/<name>.yaml``. The cards ship as package data, so
:func:`load_cards` finds them the same way from a source checkout, an editable install and a wheel. The
published figures are extracted from the seed documents by ``scripts/extract_cards.py``; ``params``,
``flops`` and ``size_ratio`` are filled by ``scripts/update_card_fidelity.py`` from networks hpi.zoo builds.

Every key of a card is required (unknown figures are written as ``null``), unknown keys are rejected, and
every error names the file and the dotted key::

    >>> from hpi.cards import get_card
    >>> card = get_card("PP-LCNet_x1_0")
    >>> card.latency.cpu_ms.normal, card.latency.cpu_ms.hpi, card.metrics.top1
    (4.03, 1.35, 71.32)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import difflib
import functools
import io
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from hpi.errors import InvalidConfigError, ModelSourceError, UnknownModelError

try:  # Python 3.11+
    from importlib.resources.abc import Traversable
except ImportError:  # pragma: no cover - Python 3.10
    from importlib.abc import Traversable

Task = Literal["classification", "embedding", "detection"]
Interpolation = Literal["NEAREST", "LINEAR", "BICUBIC", "AREA", "LANCZOS4"]
TableFormat = Literal["text", "md", "csv"]

CARD_SUFFIX = ".yaml"


@dataclass(frozen=True)
class BenchmarkEnvironment:
    """The machine and settings a seed document states for its published figures."""

    seed: str  # seed document the figures come from, e.g. "002"
    gpu: str  # GPU model the GPU latencies were measured on
    cpu: str  # CPU model the CPU latencies were measured on
    cpu_threads: int  # inference threads used for the CPU latencies
    normal_mode: str  # what "normal" latency means in that document
    hpi_mode: str | None  # what "high-performance" latency means; None when the document gives no pair
    software: str | None  # OS / CUDA stack named by the document, if any
    metric_dataset: str  # dataset the accuracy metric is measured on


# Environments the seeds state, by the key a card's ``test_env`` refers to.
TEST_ENVIRONMENTS: dict[str, BenchmarkEnvironment] = {
    "seed-002": BenchmarkEnvironment(
        seed="002",
        gpu="NVIDIA Tesla T4",
        cpu="Intel Xeon Gold 6271C @ 2.60GHz",
        cpu_threads=8,
        normal_mode="FP32, Paddle Inference, no TensorRT (GPU); FP32, 8 threads (CPU)",
        hpi_mode="pre-selected precision and backend (Paddle / OpenVINO / TensorRT ...); FP32, 8 threads on CPU",
        software="Ubuntu 20.04, cuDNN 8.6, TensorRT 8.5.2.2",
        metric_dataset="ImageNet-1k validation set, Top-1 accuracy (%)",
    ),
    "seed-004": BenchmarkEnvironment(
        seed="004",
        gpu="NVIDIA Tesla T4 (FP32)",
        cpu="Intel Xeon Gold 5117 @ 2.00GHz",
        cpu_threads=8,
        normal_mode="FP32",
        hpi_mode="high-performance mode (backend and precision not detailed in the document)",
        software=None,
        metric_dataset="AliProducts Recall@1 (feature model); private mainbody dataset mAP (detector)",
    ),
}


@dataclass(frozen=True)
class Preprocessing:
    """How PaddleX turns a decoded image into the model input (the card default; inference.yml may override)."""

    resize_short: int | None  # scale the short side to this length, aspect kept; None when resize_to is set
    resize_to: tuple[int, int] | None  # resize straight to (width, height), aspect not kept
    crop: int | None  # side of the centre crop taken after resizing; None: no crop
    interpolation: Interpolation  # resize filter (OpenCV names, as hpi.preprocess.spec.INTERPOLATIONS)
    resize_backend: Literal[
        "cv2", "pil"
    ]  # library PaddleX resizes with (ResizeImage.backend in inference.yml)
    mean: tuple[float, float, float]  # per-channel mean in channel_order, on values already scaled to [0, 1]
    std: tuple[float, float, float]  # per-channel standard deviation, same order and scale as mean
    channel_order: Literal["RGB", "BGR"]  # channel order the model expects
    source: str  # where these defaults were read (PaddleX config path)

    def to_spec(self) -> Any:
        """This card default as a :class:`hpi.preprocess.spec.PreprocessSpec` (NCHW, scale 1/255)."""
        from hpi.preprocess.spec import PreprocessSpec

        return PreprocessSpec(
            resize_short=self.resize_short,
            resize_to=self.resize_to,
            interpolation=self.interpolation,
            resize_backend=self.resize_backend,
            crop=(self.crop, self.crop) if self.crop else None,
            mean=self.mean,
            std=self.std,
            scale=1.0 / 255.0,
            channels_first=True,
        )


@dataclass(frozen=True)
class Metrics:
    """Published accuracy; the figure that does not apply to the task is None."""

    top1: float | None  # ImageNet-1k Top-1 accuracy in percent (classification)
    recall_at_1: float | None  # Recall@1 in percent (embedding models)
    map: float | None  # mAP@[0.5:0.95] in percent (detection)
    map_50: float | None  # mAP@0.5 in percent (detection)


@dataclass(frozen=True)
class LatencyPair:
    """One device's published latency in both PaddleX modes, milliseconds per image."""

    normal: float | None  # PaddleX normal mode (Paddle Inference, FP32)
    hpi: float | None  # PaddleX high-performance mode


@dataclass(frozen=True)
class Latency:
    """Published latency of the current PaddleX edition (normal / high-performance pairs)."""

    gpu_ms: LatencyPair  # on the test environment's GPU
    cpu_ms: LatencyPair  # on the test environment's CPU


@dataclass(frozen=True)
class LegacyLatency:
    """The single latency per device of the older documentation edition (seed 000), which states no machine."""

    gpu_ms: float | None  # GPU inference time in ms; None where the edition gives none
    cpu_ms: float | None  # CPU inference time in ms; None where the edition prints "-"


@dataclass(frozen=True)
class ModelCard:
    """Everything hpi knows about one PaddleX model before loading its files."""

    name: str  # PaddleX model name; equals the card's file name without ".yaml"
    family: str  # architecture family, e.g. "PP-HGNetV2"
    task: Task  # what the output means: class scores, an embedding, or boxes
    core: bool  # one of the nine core models of the classification module (seed 002, first table)
    input_size: int  # side of the square model input in pixels
    preprocessing: Preprocessing  # PaddleX's default input pipeline for this model
    metrics: Metrics  # published accuracy
    latency: Latency  # published latency, current edition
    legacy_latency: LegacyLatency | None  # older edition's figures; None where it does not list the model
    size_mb: float | None  # published model size in MB (the seeds' "M"; "G" read as 1000 M)
    size_published: str | None  # the size exactly as printed, e.g. "1.04 G"
    test_env: str  # key of TEST_ENVIRONMENTS the published figures were measured in
    buildable: bool  # hpi.zoo can build this architecture offline
    params: int | None  # zoo build's parameter count incl. BatchNorm running stats; None until measured
    flops: int | None  # one input at input_size, PaddleClas' FLOPs convention (fidelity.count_flops); or None
    size_ratio: float | None  # size_mb / (params * 4 bytes / 1e6); about 1 when the size is the FP32 weights
    fidelity_note: str | None  # why params, flops or size_ratio look the way they do, when that needs saying


# ---------------------------------------------------------------------------------------------------------
# Reading and validating


def default_cards_dir() -> Traversable:
    """The cards shipped inside the package (``hpi/data/model_cards``)."""
    return resources.files("hpi").joinpath("data", "model_cards")


def load_cards(directory: str | os.PathLike[str] | Traversable | None = None) -> dict[str, ModelCard]:
    """Read and validate every ``*.yaml`` card in ``directory``.

    Args:
        directory: folder of cards; None reads the cards shipped with hpi.

    Returns:
        Cards by model name, in name order.

    Raises:
        ModelSourceError: the folder is missing, or a card is malformed (the message names the file and key).
    """
    if directory is None:
        return dict(_default_cards())
    return _read_dir(directory)


@functools.lru_cache(maxsize=1)
def _default_cards() -> dict[str, ModelCard]:
    return _read_dir(default_cards_dir())


def _read_dir(directory: str | os.PathLike[str] | Traversable) -> dict[str, ModelCard]:
    root: Traversable = directory if isinstance(directory, Traversable) else Path(directory)
    if not root.is_dir():
        raise ModelSourceError(f"model card directory {str(root)!r} does not exist")
    cards: dict[str, ModelCard] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(CARD_SUFFIX) or not entry.is_file():
            continue
        card = parse_card(entry.read_text(encoding="utf-8"), where=str(entry))
        cards[card.name] = card
    if not cards:
        raise ModelSourceError(f"model card directory {str(root)!r} holds no {CARD_SUFFIX} files")
    return cards


def parse_card(text: str, where: str = "<card>") -> ModelCard:
    """Parse one card's YAML text; ``where`` (usually the path) prefixes every error message."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelSourceError(f"{where}: not valid YAML: {exc}") from exc
    card = _build(ModelCard, data, where, "")
    stem = Path(where).name
    if stem.endswith(CARD_SUFFIX) and stem[: -len(CARD_SUFFIX)] != card.name:
        raise ModelSourceError(f"{where}: key 'name' is {card.name!r} but the file is named {stem!r}")
    if card.test_env not in TEST_ENVIRONMENTS:
        raise ModelSourceError(
            f"{where}: key 'test_env' is {card.test_env!r}; known: {', '.join(TEST_ENVIRONMENTS)}"
        )
    prep = card.preprocessing
    if (prep.resize_short is None) == (prep.resize_to is None):
        raise ModelSourceError(f"{where}: key 'preprocessing': give exactly one of resize_short or resize_to")
    return card


def _build(cls: type, data: Any, where: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        what = f"key {prefix.rstrip('.')!r}" if prefix else "the card"
        raise ModelSourceError(f"{where}: {what} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ModelSourceError(
            f"{where}: unknown key {prefix + str(unknown[0])!r}; expected one of: {', '.join(fields)}"
        )
    missing = [name for name in fields if name not in data]
    if missing:
        raise ModelSourceError(f"{where}: missing key {prefix + missing[0]!r} (write null if it is unknown)")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(data[name], hints[name], where, prefix + name) for name in fields}
    return cls(**values)


def _convert(value: Any, hint: Any, where: str, key: str, nullable: bool = False) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:  # pragma: no cover - the schema only uses "X | None"
            raise TypeError(f"cards schema: no validator for {hint!r} (key {key})")
        if value is None and type(None) in args:
            return None
        return _convert(value, inner[0], where, key, nullable=type(None) in args)
    if origin is Literal:
        if value in args:
            return value
        want = "one of: " + ", ".join(map(str, args))
    elif origin is tuple:
        if isinstance(value, list) and len(value) == len(args):
            return tuple(
                _convert(v, a, where, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        want = f"a list of {len(args)} values"
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return _build(hint, value, where, key + ".")
        want = "a mapping"
    elif hint is bool:
        if isinstance(value, bool):
            return value
        want = "true or false"
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        want = "an integer"
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        want = "a number"
    elif hint is str:
        if isinstance(value, str):
            return value
        want = "a string"
    else:  # pragma: no cover - a field type this validator was not taught
        raise TypeError(f"cards schema: no validator for {hint!r} (key {key})")
    if nullable:
        want += " or null"
    raise ModelSourceError(f"{where}: key {key!r}: expected {want}, got {value!r}")


# ---------------------------------------------------------------------------------------------------------
# Writing (used by the scripts that produce and update the cards)


def card_to_dict(card: ModelCard) -> dict[str, Any]:
    """The card as plain YAML-ready data (tuples become lists), keys in schema order."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(card)


class _CardDumper(yaml.SafeDumper):
    """Writes short lists of scalars inline ([0.485, 0.456, 0.406]) and everything else in block style."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_CardDumper.add_representer(list, _represent_list)


def dump_card(card: ModelCard) -> str:
    """The card's YAML text, as written under ``hpi/data/model_cards``."""
    return yaml.dump(card_to_dict(card), Dumper=_CardDumper, sort_keys=False, allow_unicode=True, width=110)


# ---------------------------------------------------------------------------------------------------------
# Looking up


def get_card(name: str, cards: Mapping[str, ModelCard] | None = None) -> ModelCard:
    """The card of model ``name``.

    Raises:
        UnknownModelError: no such card; the message lists close matches.
    """
    pool = load_cards() if cards is None else cards
    if name in pool:
        return pool[name]
    folded = {n.lower(): n for n in pool}
    close = difflib.get_close_matches(name.lower(), list(folded), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(folded[c] for c in close)}" if close else ""
    raise UnknownModelError(f"no model card named {name!r} among {len(pool)} cards{hint}")


def core_models(cards: Mapping[str, ModelCard] | None = None) -> list[ModelCard]:
    """The nine core models of PaddleX's image classification module, in name order."""
    pool = load_cards() if cards is None else cards
    return [card for card in pool.values() if card.core]


def select_cards(
    cards: Mapping[str, ModelCard] | Iterable[ModelCard] | None = None,
    *,
    family: str | None = None,
    task: str | None = None,
    core: bool = False,
) -> list[ModelCard]:
    """Cards matching every given filter (family and task compare case-insensitively).

    Raises:
        InvalidConfigError: ``family`` or ``task`` matches no card; the message lists the available values.
    """
    pool = _as_list(load_cards() if cards is None else cards)
    if family is not None:
        families = sorted({c.family for c in pool})
        if family.lower() not in {f.lower() for f in families}:
            raise InvalidConfigError(f"unknown family {family!r}; available: {', '.join(families)}")
        pool = [c for c in pool if c.family.lower() == family.lower()]
    if task is not None:
        tasks = typing.get_args(Task)
        if task.lower() not in tasks:
            raise InvalidConfigError(f"unknown task {task!r}; available: {', '.join(tasks)}")
        pool = [c for c in pool if c.task == task.lower()]
    if core:
        pool = [c for c in pool if c.core]
    return pool


def _as_list(cards: Mapping[str, ModelCard] | Iterable[ModelCard]) -> list[ModelCard]:
    return list(cards.values()) if isinstance(cards, Mapping) else list(cards)


# ---------------------------------------------------------------------------------------------------------
# Tables

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


def format_cards_table(
    cards: Mapping[str, ModelCard] | Iterable[ModelCard], fmt: TableFormat = "text"
) -> str:
    """The cards as a table: aligned text, a Markdown table, or CSV with one number per column.

    Args:
        cards: the cards to list, in the order given.
        fmt: "text", "md" or "csv".

    Raises:
        InvalidConfigError: unknown ``fmt``.
    """
    rows = _as_list(cards)
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


# ---------------------------------------------------------------------------------------------------------
# Command line: `hpi models`


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi models`` to the main parser's subcommands; its handler is ``args.func(args) -> int``."""
    parser = subparsers.add_parser(
        "models",
        help="list the model cards (published accuracy, latency, size; measured params)",
        description="List PaddleX models with their published figures. Core models are marked with '*'.",
    )
    parser.add_argument("--family", help="only this architecture family, e.g. PP-LCNet")
    parser.add_argument("--task", choices=typing.get_args(Task), help="only models of this task")
    parser.add_argument("--core", action="store_true", help="only the nine core classification models")
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=typing.get_args(TableFormat),
        default="text",
        help="output format (default: text)",
    )
    parser.set_defaults(func=run_models_command)
    return parser


def run_models_command(args: argparse.Namespace) -> int:
    """Print the table for ``hpi models``; HpiError propagates to the main CLI, which reports it."""
    cards = select_cards(load_cards(), family=args.family, task=args.task, core=args.core)
    print(format_cards_table(cards, args.fmt), end="")
    return 0
