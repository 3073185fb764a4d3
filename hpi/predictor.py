"""The predictor: PaddleX's ``create_model(...).predict(...)`` over any backend.

Image to result, forward only: inputs are expanded into items, read and decoded per item (an unreadable item is
recorded, not fatal), preprocessed into one batch, run in one engine call, post-processed into results.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpi.backends import get_backend
from hpi.backends.base import Engine
from hpi.cache import EngineCache
from hpi.device import Device, parse_device
from hpi.errors import HpiError, InvalidConfigError, InvalidInputError, ModelSourceError, UnknownModelError
from hpi.inputs import InputItem, array_to_rgb, expand_inputs, named_error
from hpi.model import ModelSource
from hpi.preprocess import reference
from hpi.preprocess.decode import decode_image
from hpi.preprocess.fused import BatchKernel, FusedPreprocessor
from hpi.preprocess.graph import ResizeCropU8
from hpi.results import BaseResult, ClassificationResult, EmbeddingResult
from hpi.select import BackendChoice, HpiConfig, resolve_backend, with_folding, with_spin_policy
from hpi.zoo.store import weights_kind

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemFailure:
    """One input that could not be predicted, and why."""

    index: int
    input_path: str | None
    error: HpiError


class PredictionError(InvalidInputError):
    """Raised after every good item of a ``predict()`` call was yielded, naming each item that failed."""

    def __init__(self, failures: list[ItemFailure]) -> None:
        failures = sorted(failures, key=lambda f: f.index)
        self.failures = failures
        lines = "; ".join(str(f.error) for f in failures)
        super().__init__(f"{len(failures)} input(s) failed: {lines}")


def locate_model(model_name: str, model_dir: str | Path | None) -> ModelSource:
    """``model_dir`` if given, else the local model store (real weights before seeded ones)."""
    if model_dir is not None:
        return ModelSource.from_path(model_dir, model_name=model_name)
    try:
        from hpi.zoo.store import locate
    except ImportError:  # the zoo needs nothing optional to *locate*; this guards a broken install only
        locate = None
    found = locate(model_name) if locate else None
    if found is None:
        raise UnknownModelError(
            f"model {model_name!r} is not in the local model store and no model_dir was given; "
            f"build it offline with 'hpi zoo build {model_name}', add downloaded weights with "
            f"'hpi zoo add {model_name} DIR', or pass model_dir="
        )
    return ModelSource.from_path(found, model_name=model_name)


class LoadedModel:
    """What every loaded model has: its source, its engine, the choice that made it, and where its weights came
    from ("seeded" for zoo builds, whose scores say nothing of accuracy). Closing it frees the engine."""

    def __init__(self, source: ModelSource, engine: Engine, choice: BackendChoice, weights: str | None) -> None:
        self.source = source
        self.engine = engine
        self.choice = choice
        self.weights = weights

    @property
    def model_name(self) -> str:
        return self.source.name

    @property
    def backend(self) -> str:
        return self.engine.name

    @property
    def device(self) -> Device:
        return self.engine.device

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name!r}, {self.engine.describe()}, {self.choice.mode})"

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Predictor(LoadedModel):
    """A loaded model. Use :func:`create_model` to make one."""

    def __init__(self, source: ModelSource, engine: Engine, choice: BackendChoice, *, topk: int | None = None,
                 fast_preprocess: bool = True) -> None:
        if source.spec.task not in ("classification", "embedding"):
            raise InvalidConfigError(
                f"{source.name} is a {source.spec.task} model; use it through a pipeline (hpi.create_pipeline)"
            )
        super().__init__(source, engine, choice, weights_kind(source.directory))
        self.topk = topk
        self._spec = source.spec.preprocess
        if self._spec is None:
            raise ModelSourceError(f"{source.name}: no classification preprocessing (PreProcess.transform_ops)")
        # An engine with folded preprocessing takes uint8 NHWC: the CPU half only decodes, resizes and crops.
        # Otherwise the fused kernel; fast_preprocess=False runs PaddleX's op chain as written (the benchmark's
        # normal-mode baseline).
        if engine.config.fold_preprocess:
            self._preprocess = ResizeCropU8(self._spec)
        elif fast_preprocess:
            self._preprocess = FusedPreprocessor(self._spec)
        else:
            self._preprocess = functools.partial(reference.preprocess_batch, self._spec)

    def preprocess(self, images: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 HWC images to the model's input batch."""
        return self._preprocess(images)

    def predict(self, input: Any, batch_size: int = 1, topk: int | None = None) -> Iterator[BaseResult]:  # noqa: A002
        """Yield one result per input image, in order.

        Args:
            input: an array (HWC BGR uint8), a path, a URL, a directory, ``{"img": ...}`` or a list of these.
            batch_size: images per engine call.
            topk: classes per result; default: the model's ``PostProcess.Topk.topk``.

        Raises:
            PredictionError: after all good items were yielded, if any item could not be read or processed;
                ``.failures`` lists them.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        k = topk or self.topk
        if k is not None and (not isinstance(k, int) or k < 1):
            raise InvalidConfigError(f"topk must be a positive integer, got {k!r}")
        items = expand_inputs(input)
        failures: list[ItemFailure] = []
        for start in range(0, len(items), batch_size):
            yield from self._predict_batch(items[start:start + batch_size], k, failures)
        if failures:
            raise PredictionError(failures)

    __call__ = predict

    def _predict_batch(self, items: list[InputItem], topk: int | None, failures: list[ItemFailure]
                       ) -> Iterator[BaseResult]:
        # Read every item (file and URL bytes stay encoded: the fused kernel decodes them on its threads).
        payloads: list[bytes | np.ndarray] = []
        readable: list[InputItem] = []
        for item in items:
            try:
                data = item.read_bytes()
                payloads.append(data if data is not None else array_to_rgb(item.source, item.label))
                readable.append(item)
            except HpiError as exc:
                failures.append(ItemFailure(item.index, item.input_path, named_error(exc, item)))
        if not readable:
            return
        batch, kept = self._preprocess_items(readable, payloads, failures)
        if not kept:
            return
        output = self.engine.run(batch)[0]
        for (item, payload), row in zip(kept, output):
            yield self._make_result(item, payload, row, topk)

    def _preprocess_items(self, items: list[InputItem], payloads: list[bytes | np.ndarray],
                          failures: list[ItemFailure]) -> tuple[np.ndarray, list[tuple[InputItem, Any]]]:
        """One batch from the items that preprocess cleanly; the others become failures."""
        if hasattr(self._preprocess, "process"):  # the fused kernel: per-item errors, decoding on its threads
            done = self._preprocess.process(payloads, [it.label for it in items])
            for err in done.errors:
                item = items[err.index]
                failures.append(ItemFailure(item.index, item.input_path, named_error(err.error, item)))
            return done.batch, [(items[i], payloads[i]) for i in done.indices]
        rows, kept = [], []
        for item, payload in zip(items, payloads):
            try:
                rgb = decode_image(payload, item.label) if isinstance(payload, bytes) else payload
                rows.append(self._preprocess([rgb])[0])
                kept.append((item, rgb))
            except HpiError as exc:
                failures.append(ItemFailure(item.index, item.input_path, named_error(exc, item)))
        return (np.stack(rows) if rows else np.empty(0, np.float32)), kept

    def _make_result(self, item: InputItem, payload: bytes | np.ndarray, row: np.ndarray, topk: int | None
                     ) -> BaseResult:
        fields: dict[str, Any] = {"input_path": item.input_path, "page_index": None}
        if self.source.spec.task == "embedding":
            vec = row.reshape(-1).astype(np.float32)
            norm = float(np.linalg.norm(vec))
            fields["feature"] = (vec / norm if norm > 0 else vec).tolist()
            result: BaseResult = EmbeddingResult(fields)
        else:
            spec = self.source.spec.topk
            k = min(topk or (spec.topk if spec else 5), row.shape[-1])
            order = np.argsort(-row, kind="stable")[:k]
            labels = spec.label_list if spec else None
            fields["class_ids"] = [int(i) for i in order]
            fields["scores"] = [round(float(row[i]), 5) for i in order]
            fields["label_names"] = [labels[i] if labels and i < len(labels) else str(int(i)) for i in order]
            result = ClassificationResult(fields)
        if self.weights == "seeded":
            result["weights"] = "seeded"
        if isinstance(payload, np.ndarray):
            result["_image"] = payload
        else:  # decoded again only if the caller asks for the visualisation
            result["_loader"] = functools.partial(decode_image, payload, item.label)
        result["_index"] = item.index
        return result


    def close(self) -> None:
        super().close()
        if isinstance(self._preprocess, BatchKernel):
            self._preprocess.close()


def create_model(
    model_name: str,
    model_dir: str | Path | None = None,
    *,
    device: str | Device | None = None,
    use_hpip: bool = False,
    hpi_config: Mapping[str, Any] | HpiConfig | None = None,
    topk: int | None = None,
    cache_dir: str | Path | None = None,
) -> Predictor:
    """Load a model for inference, as PaddleX's ``create_model`` does.

    Args:
        model_name: the PaddleX model name; must equal ``Global.model_name`` in the model's ``inference.yml``.
        model_dir: a PaddleX inference directory (or ONNX + inference.yml). Default: the local model store.
        device: "cpu", "gpu" or "gpu:N". Default: gpu:0 if a CUDA device is visible, else cpu.
        use_hpip: False is normal mode (Paddle Inference fp32); True is high-performance mode.
        hpi_config: PaddleX's keys (``auto_config``, ``backend``, ``backend_config``) and hpi's own
            (``allow_reduced_precision``, ``threads``); see :class:`hpi.select.HpiConfig`.
        topk: default number of classes per result.
        cache_dir: the engine cache (default: ``$HPI_CACHE_DIR`` or the platform cache directory).

    Example:
        >>> model = create_model("PP-LCNet_x1_0", device="cpu", use_hpip=True)
        >>> next(model.predict("cat.jpg")).print()
    """
    source = locate_model(model_name, model_dir)
    dev = parse_device(device)
    cfg = HpiConfig.from_dict(hpi_config)
    cache = EngineCache(cache_dir)
    def measure(src: ModelSource, d: Device, c: HpiConfig) -> BackendChoice:
        from hpi.selection import measured_choice

        return measured_choice(src, d, c, cache=cache)

    choice = resolve_backend(source, dev, use_hpip=use_hpip, hpi_config=cfg, measure=measure)
    if use_hpip:
        choice = with_folding(choice, source, cfg)
    choice = with_spin_policy(choice, cfg)
    logger.info("%s runs on %s[%s]: %s", source.name, choice.backend, choice.precision, choice.reason)
    engine = get_backend(choice.backend).engine(source, dev, choice.config, cache).load()
    return Predictor(source, engine, choice, topk=topk)
