"""What every loaded model shares: its source, engine and choice, and the one predict loop (inputs to results).

The loop, forward only: ``expand_inputs`` -> batches of ``batch_size`` items -> each item read (an unreadable one
becomes an :class:`ItemFailure`, the rest of the batch goes on) -> the model's own batch step -> results, each
finished the same way (seeded-weights mark, the source image for ``save_to_img``, the item's index) ->
:class:`~hpi.errors.PredictionError` naming every failed item, after every good result was yielded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from hpi.backends.base import Engine
from hpi.backends.choice import BackendChoice
from hpi.device import Device
from hpi.errors import HpiError, InvalidConfigError, PredictionError
from hpi.inputs import InputItem, array_to_rgb, expand_inputs, named_error
from hpi.preprocess.decode import decode_image
from hpi.results import BaseResult
from hpi.source import ModelSource, Task
from hpi.zoo.store import weights_kind

Payload = bytes | np.ndarray  # an item's encoded bytes (files, URLs) or its RGB pixels


@dataclass(frozen=True)
class ItemFailure:
    """One input that could not be predicted, and why."""

    index: int
    input_path: str | None
    error: HpiError


def check_batch_size(batch_size: Any) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InvalidConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def fail(failures: list[ItemFailure], item: InputItem, exc: HpiError) -> None:
    """Record that ``item`` failed with ``exc`` (the message names the item)."""
    failures.append(ItemFailure(item.index, item.input_path, named_error(exc, item)))


def read_items(items: Iterable[InputItem], failures: list[ItemFailure], *, decode: bool = True
               ) -> list[tuple[InputItem, Payload]]:
    """Each readable item with its RGB pixels, or (``decode=False``) its still-encoded bytes for a kernel that
    decodes on its own threads; unreadable items go to ``failures``."""
    loaded: list[tuple[InputItem, Payload]] = []
    for item in items:
        try:
            data = item.read_bytes()
            if data is None:
                loaded.append((item, array_to_rgb(item.source, item.label)))
            else:
                loaded.append((item, decode_image(data, item.label) if decode else data))
        except HpiError as exc:
            fail(failures, item, exc)
    return loaded


BatchStep = Callable[[list[tuple[InputItem, Payload]], list[ItemFailure]], Iterator[BaseResult]]


def predict_loop(input: Any, batch_size: int, step: BatchStep, *, decode: bool = True  # noqa: A002
                 ) -> Iterator[BaseResult]:
    """The predict loop every model and pipeline runs: ``step`` turns one batch of read items into results (and
    records the items it cannot process in the failures list it is given).

    Raises:
        InvalidInputError: at once, for structural errors (a missing path, an unsupported type).
        PredictionError: after every good result was yielded, if any item failed.
    """
    check_batch_size(batch_size)
    items = expand_inputs(input)
    failures: list[ItemFailure] = []
    for start in range(0, len(items), batch_size):
        loaded = read_items(items[start:start + batch_size], failures, decode=decode)
        if loaded:
            yield from step(loaded, failures)
    if failures:
        raise PredictionError(failures)


def finish_result(result: BaseResult, item: InputItem, payload: Payload, *, seeded: bool) -> BaseResult:
    """What every result carries besides its fields: the seeded-weights mark, the source image (or how to decode it
    again, only if the caller asks for the visualisation) and the item's index."""
    if seeded:
        result["weights"] = "seeded"
    if isinstance(payload, np.ndarray):
        result["_image"] = payload
    else:
        result["_loader"] = functools.partial(decode_image, payload, item.label)
    result["_index"] = item.index
    return result


class LoadedModel:
    """What every loaded model has: its source, its engine, the choice that made it, and where its weights came
    from ("seeded" for zoo builds, whose scores say nothing of accuracy). Closing it frees the engine."""

    tasks: ClassVar[tuple[Task, ...]]  # the inference.yml tasks this model type runs
    options: ClassVar[tuple[str, ...]] = ()  # keyword options its constructor takes beyond the engine
    # decodes JPEGs itself and can take reduced_decode=True (hpi.selection.reduced_decode judges it)
    reduced_decode_candidate: ClassVar[bool] = False

    def __init__(self, source: ModelSource, engine: Engine, choice: BackendChoice) -> None:
        self.check_source(source)
        self.source = source
        self.engine = engine
        self.choice = choice
        self.weights = weights_kind(source.directory)

    @classmethod
    def check_source(cls, source: ModelSource) -> None:
        """Raise an :class:`~hpi.errors.HpiError` if this model type cannot run ``source``: called by
        :func:`hpi.loading.load_model` before anything is built."""
        if source.spec.task not in cls.tasks:
            raise InvalidConfigError(
                f"{source.name} is a {source.spec.task} model; {cls.__name__} runs {' and '.join(cls.tasks)} "
                "models; load it with hpi.create_model, which picks the model type from the task"
            )


    @property
    def model_name(self) -> str:
        return self.source.name

    @property
    def backend(self) -> str:
        return self.engine.name

    @property
    def device(self) -> Device:
        return self.engine.device

    @property
    def seeded(self) -> bool:
        return self.weights == "seeded"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name!r}, {self.engine.describe()}, {self.choice.mode})"

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
