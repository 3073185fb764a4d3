"""Classification and embedding models: PaddleX's ``create_model(...).predict(...)`` over any backend.

A batch, forward only: the items' bytes stay encoded until the fused kernel decodes them on its threads (arrays
go in as they are), preprocessing writes one batch, the engine runs it once, and each output row becomes a result:
top-k classes (classification) or the L2-normalised feature (embedding).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from hpi.backends.base import Engine
from hpi.backends.choice import BackendChoice
from hpi.errors import HpiError, InvalidConfigError
from hpi.inputs import InputItem
from hpi.models.base import ItemFailure, LoadedModel, Payload, fail, finish_result, predict_loop
from hpi.preprocess import reference
from hpi.preprocess.decode import decode_image
from hpi.preprocess.fused import BatchKernel, FusedPreprocessor
from hpi.preprocess.graph import ResizeCropU8
from hpi.results import BaseResult, ClassificationResult, EmbeddingResult
from hpi.source import ModelSource


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    """Each row of ``rows`` [N, D] divided by its L2 norm (zero rows stay zero), as float32."""
    rows = rows.reshape(len(rows), -1).astype(np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


class Predictor(LoadedModel):
    """A loaded classification or embedding model. Use :func:`hpi.create_model` to make one."""

    tasks = ("classification", "embedding")
    options = ("topk",)
    reduced_decode_candidate = True

    def __init__(self, source: ModelSource, engine: Engine, choice: BackendChoice, *, topk: int | None = None,
                 fast_preprocess: bool = True, reduced_decode: bool = False) -> None:
        super().__init__(source, engine, choice)
        self.topk = topk
        spec = source.spec.preprocess
        # The engine takes what the choice made it take: uint8 NHWC when preprocessing is folded into its graph
        # (the CPU half only decodes, resizes and crops), else the fused kernel's normalised planes;
        # fast_preprocess=False runs PaddleX's op chain as written (the benchmark's normal-mode baseline).
        # reduced_decode: large JPEGs decode at 1/2, 1/4 or 1/8 size where the resize target allows it (a gated
        # candidate of high-performance mode, never normal mode's default: hpi.selection.reduced_decode judges it).
        if engine.config.fold_preprocess:
            self._preprocess: Any = ResizeCropU8(spec, reduced_decode=reduced_decode)
        elif fast_preprocess:
            self._preprocess = FusedPreprocessor(spec, reduced_decode=reduced_decode)
        else:
            self._preprocess = functools.partial(reference.preprocess_batch, spec)

    def preprocess(self, images: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 HWC images to the model's input batch."""
        return self._preprocess(images)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised outputs [N, D] of RGB uint8 images, in as few engine calls as the model allows (the
        PP-ShiTuV2 embedding step)."""
        step = self.fixed_batch or max(1, len(images))
        rows = [self.engine.run(self.preprocess(list(images[i:i + step])))[0] for i in range(0, len(images), step)]
        return l2_normalise(np.concatenate(rows)) if rows else np.zeros((0, 0), np.float32)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the engine's graph is fixed to, or None when any batch runs."""
        shape = self.engine.input_shapes.get(self.engine.input_names[0]) if self.engine.input_names else None
        return shape[0] if shape else None

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
        k = topk or self.topk
        if k is not None and (not isinstance(k, int) or k < 1):
            raise InvalidConfigError(f"topk must be a positive integer, got {k!r}")
        step = functools.partial(self._predict_batch, topk=k)
        # File and URL bytes stay encoded for the fused kernel, which decodes them on its threads.
        yield from predict_loop(input, batch_size, step, decode=not isinstance(self._preprocess, BatchKernel))

    __call__ = predict

    def _predict_batch(self, loaded: list[tuple[InputItem, Payload]], failures: list[ItemFailure], *,
                       topk: int | None) -> Iterator[BaseResult]:
        batch, kept = self._preprocess_items(loaded, failures)
        if not kept:
            return
        output = self.engine.run(batch)[0]
        for (item, payload), row in zip(kept, output):
            yield self.make_result(item, payload, row, topk)

    def _preprocess_items(self, loaded: list[tuple[InputItem, Payload]], failures: list[ItemFailure]
                          ) -> tuple[np.ndarray, list[tuple[InputItem, Payload]]]:
        """One batch from the items that preprocess cleanly; the others become failures."""
        if isinstance(self._preprocess, BatchKernel):  # per-item errors, decoding on the kernel's threads
            done = self._preprocess.process([p for _, p in loaded], [it.label for it, _ in loaded])
            for err in done.errors:
                fail(failures, loaded[err.index][0], err.error)
            return done.batch, [loaded[i] for i in done.indices]
        rows, kept = [], []
        for item, payload in loaded:
            try:
                rgb = decode_image(payload, item.label) if isinstance(payload, bytes) else payload
                rows.append(self._preprocess([rgb])[0])
                kept.append((item, rgb))
            except HpiError as exc:
                fail(failures, item, exc)
        return (np.stack(rows) if rows else np.empty(0, np.float32)), kept

    def make_result(self, item: InputItem, payload: Payload, row: np.ndarray, topk: int | None) -> BaseResult:
        """One output row as PaddleX's result: top-k classes, or the L2-normalised feature."""
        fields: dict[str, Any] = {"input_path": item.input_path, "page_index": None}
        if self.source.spec.task == "embedding":
            fields["feature"] = l2_normalise(row[None])[0].tolist()
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
        return finish_result(result, item, payload, seeded=self.seeded)

    def close(self) -> None:
        super().close()
        if isinstance(self._preprocess, BatchKernel):
            self._preprocess.close()

