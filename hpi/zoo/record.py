"""The zoo's record of one buildable architecture (:class:`ZooModel`), below both the catalogue that lists the
records and the modules that seed and export them, so neither has to import the other.

A model's facts (family, task, input size, PaddleX's preprocessing, published figures) live in one place, its
model card (:mod:`hpi.cards`, ``hpi/data/model_cards/<name>.yaml``); a record holds only what building it needs
beyond that: the network, build-only specifics, and who writes it. Its ``family``, ``task``, ``input_size`` and
``resize_short`` are read from the card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpi.cards import ModelCard, Task, get_card


@dataclass(frozen=True)
class ZooModel:
    """One buildable architecture."""

    name: str  # the PaddleX model name, e.g. "PP-HGNetV2-B4"; its card is hpi/data/model_cards/<name>.yaml
    build: Callable[[], Any]  # returns a paddle.nn.Layer in eval mode taking NCHW float32 (ends in softmax)
    extra: dict[str, Any] = field(default_factory=dict)  # build specifics: embedding dim, detector I/O, ...
    # "module:function" that seeds and writes the model, with the signature of hpi.zoo.export.export_zoo_model;
    # None: that generic exporter. Families with their own output format (detectors, PaddleClas' exact recognition
    # config) name theirs.
    exporter: str | None = None

    @property
    def card(self) -> ModelCard:
        """The model's card: the one record of its facts."""
        return get_card(self.name)

    @property
    def family(self) -> str:
        return self.card.family  # e.g. "PP-HGNetV2"

    @property
    def task(self) -> Task:
        return self.card.task

    @property
    def input_size(self) -> int:
        return self.card.input_size  # model input side after crop

    @property
    def resize_short(self) -> int | None:
        return self.card.preprocessing.resize_short  # None: resize straight to input_size
