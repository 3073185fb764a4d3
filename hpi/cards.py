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

import difflib
import functools
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from hpi.errors import InvalidConfigError, ModelSourceError, UnknownModelError
from hpi.schema import record_from_mapping, record_to_dict

try:  # Python 3.11+
    from importlib.resources.abc import Traversable
except ImportError:  # pragma: no cover - Python 3.10
    from importlib.abc import Traversable

Task = Literal["classification", "embedding", "detection"]
Interpolation = Literal["NEAREST", "LINEAR", "BICUBIC", "AREA", "LANCZOS4"]

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
    card = record_from_mapping(ModelCard, data, where=where, error=ModelSourceError, what="the card")
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


# ---------------------------------------------------------------------------------------------------------
# Writing (used by the scripts that produce and update the cards)


class _CardDumper(yaml.SafeDumper):
    """Writes short lists of scalars inline ([0.485, 0.456, 0.406]) and everything else in block style."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_CardDumper.add_representer(list, _represent_list)


def dump_card(card: ModelCard) -> str:
    """The card's YAML text, as written under ``hpi/data/model_cards``."""
    return yaml.dump(record_to_dict(card), Dumper=_CardDumper, sort_keys=False, allow_unicode=True, width=110)


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
    given = load_cards() if cards is None else cards
    pool = list(given.values()) if isinstance(given, Mapping) else list(given)
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

