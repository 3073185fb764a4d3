"""PP-ShiTuV2, general image recognition: mainbody detection, feature extraction, faiss retrieval.

Per image, as PP-ShiTu does it:

1. **Candidates.** The detector's boxes scoring above ``det_threshold`` (the best ``max_det_results``), plus the
   whole image, always (PaddleClas' ``append_self``: ``det_score`` 1.0, so an object the detector misses is still
   recognised, and a gallery image queried as is matches itself).
2. **Features.** Every candidate is cropped (``img[int(ymin):int(ymax), int(xmin):int(xmax)]``) and all crops
   of the image are embedded in one batch; features are L2-normalised.
3. **Retrieval.** Each feature is searched in the :class:`~hpi.retrieval.index.FeatureIndex` for ``rec_topk``
   labels; a label is kept when its score passes ``rec_threshold`` (``IP``: similarity at least the threshold;
   ``L2``: squared distance at most the threshold). Candidates without a kept label are dropped.
4. **Box NMS.** Candidates are ordered by their best score and one that overlaps a better one by more than
   ``rec_nms_threshold`` IoU is dropped (PaddleClas' ``nms_to_rec_results``), so the whole image and a box around
   the same object give one answer.

Results are PaddleX's: ``{input_path, boxes: [{labels, rec_scores, det_score, coordinate}]}``, best box first.

Indexes are built from a gallery the way PaddleX's ``build_index`` does: every gallery image is embedded whole
(no detection), labelled from ``gallery.txt`` (``<image path> <label>`` per line, paths relative to
``gallery_imgs``) or from a list.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpi.boxes import nms
from hpi.errors import InvalidConfigError, InvalidInputError, PredictionError
from hpi.inputs import InputItem, expand_inputs
from hpi.loading import load_model, locate_model
from hpi.models.base import ItemFailure, Payload, fail, finish_result, predict_loop, read_items
from hpi.models.classification import Predictor
from hpi.models.detection import Detector
from hpi.pipelines.config import ShiTuConfig
from hpi.results import ShiTuResult
from hpi.retrieval import FeatureIndex, Hit, IndexType, MetricType, read_gallery

logger = logging.getLogger(__name__)

WHOLE_IMAGE_SCORE = 1.0  # det_score of the whole-image candidate, as PaddleClas' append_self gives it
GALLERY_BATCH = 8  # gallery images embedded per engine call (models with a fixed batch use theirs)

IndexLike = FeatureIndex | str | os.PathLike


@dataclass(frozen=True)
class Candidate:
    """A region of an image to recognise."""

    coordinate: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in image pixels
    det_score: float  # the detector's score (WHOLE_IMAGE_SCORE for the whole image)
    whole_image: bool = False


def crop(rgb: np.ndarray, coordinate: Sequence[float]) -> np.ndarray | None:
    """PaddleX's crop of a box (integer-truncated corners, clipped to the image); None when it is empty."""
    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = (int(c) for c in coordinate)
    x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
    y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
    if x2 <= x1 or y2 <= y1:
        return None
    return np.ascontiguousarray(rgb[y1:y2, x1:x2])


class ShiTuPipeline:
    """PP-ShiTuV2 over a detector, an embedding model and a feature index. Make one with
    :func:`hpi.create_pipeline`.

    Example:
        >>> pipeline = hpi.create_pipeline("PP-ShiTuV2", device="cpu")
        >>> index = pipeline.build_index("drink_dataset_v2.0/", "drink_dataset_v2.0/gallery.txt")
        >>> index.save("drink_index")
        >>> for res in pipeline.predict("query.jpeg", index="drink_index"):
        ...     res.print()
    """

    def __init__(self, config: ShiTuConfig, detector: Detector, recognizer: Predictor,
                 index: FeatureIndex | None = None) -> None:
        if recognizer.source.spec.task != "embedding":
            raise InvalidConfigError(
                f"SubModules.Recognition: {recognizer.model_name} is a {recognizer.source.spec.task} model; "
                "expected an embedding model (inference.yml PostProcess: NormalizeFeatures)"
            )
        self.config = config
        self.detector = detector
        self.recognizer = recognizer
        self.index = index
        self._feature_dim: int | None = None

    @classmethod
    def from_config(
        cls,
        config: ShiTuConfig,
        *,
        device: str | None = None,
        use_hpip: bool = False,
        hpi_config: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> ShiTuPipeline:
        """Load both sub-models (from ``model_dir``, the store, or a zoo build) and the configured index."""
        det, rec = config.detection, config.recognition
        index = FeatureIndex.load(config.index) if config.index else None

        def shared_cores(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
            # Detector and recogniser run in turn on the same cores: threads that spin after a run would take
            # the cores from the other model (ONNX Runtime: 129 vs 106 ms end to end on 2 cores).
            return {"spin_wait": False, **(cfg or {})}

        def load(model_class: type, sub: Any) -> Any:
            return load_model(
                model_class,
                locate_model(sub.model_name, sub.model_dir, build=True),
                device=device or sub.device or config.device,
                use_hpip=use_hpip if sub.use_hpip is None else sub.use_hpip,
                hpi_config=shared_cores(hpi_config if sub.hpi_config is None else sub.hpi_config),
                cache_dir=cache_dir,
            )

        detector = load(Detector, det)
        try:
            return cls(config, detector, load(Predictor, rec), index)
        except BaseException:
            detector.close()
            raise

    def __repr__(self) -> str:
        return f"ShiTuPipeline(detector={self.detector!r}, recognizer={self.recognizer!r}, index={self.index!r})"

    @property
    def seeded(self) -> bool:
        """True when either sub-model has seeded (untrained) weights from the zoo."""
        return "seeded" in (self.detector.weights, self.recognizer.weights)

    # ----------------------------------------------------------------------------------------------- stages

    def detect(self, images: Sequence[np.ndarray], threshold: float | None = None) -> list[list[Candidate]]:
        """Candidates per RGB uint8 image: the best ``max_det_results`` boxes above ``threshold``, then the
        whole image."""
        thr = self.config.det_threshold if threshold is None else threshold
        limit = self.config.max_det_results
        out = []
        for rgb, boxes in zip(images, self.detector.detect(images, thr)):
            best = sorted(boxes, key=lambda b: -b.score)[:limit]
            height, width = rgb.shape[:2]
            cands = [Candidate(b.coordinate, b.score) for b in best]
            cands.append(Candidate((0.0, 0.0, float(width), float(height)), WHOLE_IMAGE_SCORE, whole_image=True))
            out.append(cands)
        return out

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised features [N, D] of RGB uint8 images, in as few engine calls as the model allows."""
        if not images:
            return np.zeros((0, self.feature_dim), np.float32)
        return self.recognizer.embed(images)

    def embed(self, rgb: np.ndarray, candidates: Sequence[Candidate]) -> tuple[list[Candidate], np.ndarray]:
        """Crop every candidate and embed the crops in one batch; candidates whose crop is empty are dropped."""
        kept, crops = [], []
        for cand in candidates:
            piece = crop(rgb, cand.coordinate)
            if piece is not None:
                kept.append(cand)
                crops.append(piece)
        return kept, self.embed_images(crops)

    def search(self, features: np.ndarray, index: FeatureIndex, topk: int, threshold: float) -> list[list[Hit]]:
        """Per feature the ``topk`` nearest gallery items whose score passes ``threshold``."""
        if len(features) == 0:
            return []
        passes = (lambda s: s >= threshold) if index.higher_is_better else (lambda s: s <= threshold)
        return [[hit for hit in hits if passes(hit.score)] for hits in index.search(features, k=topk)]

    def recognise(self, rgb: np.ndarray, candidates: Sequence[Candidate], index: FeatureIndex, *, topk: int,
                  threshold: float) -> list[dict[str, Any]]:
        """The result boxes of one image: embed, search, drop unrecognised candidates, box NMS."""
        kept, features = self.embed(rgb, candidates)
        recognised = [(cand, hits) for cand, hits in zip(kept, self.search(features, index, topk, threshold)) if hits]
        # PaddleClas' nms_to_rec_results: best match first, a box overlapping a better one is dropped.
        best = np.asarray([hits[0].score for _, hits in recognised], dtype=np.float64)
        boxes = np.asarray([cand.coordinate for cand, _ in recognised], dtype=np.float64).reshape(-1, 4)
        keep = nms(boxes, best if index.higher_is_better else -best, self.config.rec_nms_threshold)
        chosen = [recognised[i] for i in keep]
        return [
            {
                "labels": [hit.label for hit in hits],
                "rec_scores": [hit.score for hit in hits],
                "det_score": cand.det_score,
                "coordinate": [round(float(c), 4) for c in cand.coordinate],
            }
            for cand, hits in chosen
        ]

    # ----------------------------------------------------------------------------------------------- predict

    def predict(
        self,
        input: Any,  # noqa: A002 - PaddleX's name
        index: IndexLike | None = None,
        *,
        det_threshold: float | None = None,
        rec_threshold: float | None = None,
        rec_topk: int | None = None,
        topk: int | None = None,
        batch_size: int | None = None,
    ) -> Iterator[ShiTuResult]:
        """Yield one :class:`ShiTuResult` per input image, in order.

        Args:
            input: an array (HWC BGR uint8), a path, a URL, a directory, ``{"img": ...}`` or a list of these.
            index: a :class:`FeatureIndex` or the directory of a saved one; default: the config's ``index``.
            det_threshold: minimum detection score; default: the config's.
            rec_threshold: see the module docstring; default: the config's.
            rec_topk: labels per box; default: the config's. ``topk`` is accepted as another name for it.
            batch_size: images per detector call; default: ``SubModules.Detection.batch_size``.

        Raises:
            InvalidConfigError: no index was given or configured, or its dimension is not the model's.
            PredictionError: after all good items were yielded, if any item failed (``.failures`` lists them).
        """
        idx = self._index(index)
        k = rec_topk or topk or self.config.rec_topk
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidConfigError(f"rec_topk must be a positive integer, got {k!r}")
        if rec_threshold is not None and (not isinstance(rec_threshold, int | float) or isinstance(rec_threshold, bool)):
            raise InvalidConfigError(f"rec_threshold must be a number, got {rec_threshold!r}")
        rec_thr = self.config.rec_threshold if rec_threshold is None else float(rec_threshold)
        size = batch_size or self.config.detection.batch_size
        step = functools.partial(self._predict_batch, index=idx, topk=k, rec_threshold=rec_thr,
                                 det_threshold=det_threshold)
        yield from predict_loop(input, size, step)

    def _predict_batch(self, loaded: list[tuple[InputItem, Payload]], failures: list[ItemFailure], *,
                       index: FeatureIndex, topk: int, rec_threshold: float, det_threshold: float | None
                       ) -> Iterator[ShiTuResult]:
        candidates = self.detect([rgb for _, rgb in loaded], det_threshold)
        for (item, rgb), cands in zip(loaded, candidates):
            try:
                boxes = self.recognise(rgb, cands, index, topk=topk, threshold=rec_threshold)
            except InvalidInputError as exc:
                fail(failures, item, exc)
                continue
            yield finish_result(ShiTuResult({"input_path": item.input_path, "boxes": boxes}), item, rgb,
                                seeded=self.seeded)

    __call__ = predict

    # ----------------------------------------------------------------------------------------------- the index

    def build_index(
        self,
        gallery_imgs: Any,
        gallery_label: str | os.PathLike | Sequence[str],
        metric_type: MetricType = "IP",
        index_type: IndexType = "HNSW32",
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> FeatureIndex:
        """Embed a gallery and index it, as PaddleX's ``build_index`` does.

        Args:
            gallery_imgs: the directory ``gallery.txt``'s paths are relative to; or, with a list of labels, the
                images themselves (anything ``predict`` accepts, one image per label).
            gallery_label: a ``gallery.txt`` path, or one label per image of ``gallery_imgs``.
            metric_type: ``"IP"`` (cosine similarity of the normalised features) or ``"L2"``.
            index_type: ``"HNSW32"``, ``"IVF"`` or ``"Flat"``.
            ef_search: HNSW search depth (see :class:`FeatureIndex`).
            nprobe: IVF lists searched per query.

        Returns:
            The index; ``index.save(dir)`` writes it, ``predict(..., index=dir)`` reads it back.

        Raises:
            InvalidInputError: a malformed gallery file, or labels that do not match the images.
            PredictionError: some gallery images could not be read (each is named); nothing is indexed then.
        """
        features, labels = self._embed_gallery(gallery_imgs, gallery_label)
        return FeatureIndex(features, labels, index_type=index_type, metric_type=metric_type, ef_search=ef_search,
                            nprobe=nprobe)

    def append_index(self, gallery_imgs: Any, gallery_label: str | os.PathLike | Sequence[str],
                     index: IndexLike) -> FeatureIndex:
        """Add gallery images to ``index`` (an index, or a saved one's directory, which is loaded; save the
        returned index to keep the change). New items get ids above every id given before."""
        idx = self.load_index(index)
        features, labels = self._embed_gallery(gallery_imgs, gallery_label)
        self._check_dim(idx)
        idx.append(features, labels)
        return idx

    def remove_index(self, remove_ids: str | os.PathLike | Sequence[int], index: IndexLike) -> FeatureIndex:
        """Remove items by id from ``index`` (an index, or a saved one's directory, which is loaded).

        Args:
            remove_ids: ids, or a text file with one id per line (PaddleX's ``remove_ids.txt``).
            index: the index to change; save the returned index to keep the change.

        Raises:
            UnknownIdError: an id is not in the index (nothing is removed then).
        """
        idx = self.load_index(index)
        idx.remove(read_ids(remove_ids) if isinstance(remove_ids, str | os.PathLike) else remove_ids)
        return idx

    # ----------------------------------------------------------------------------------------------- helpers

    @property
    def feature_dim(self) -> int:
        """The embedding dimension (the model is run once on a blank image to find it)."""
        if self._feature_dim is None:
            self._feature_dim = int(self.recognizer.embed([np.full((64, 64, 3), 127, dtype=np.uint8)]).shape[1])
        return self._feature_dim

    def _check_dim(self, index: FeatureIndex) -> None:
        if index.dim != self.feature_dim:
            raise InvalidConfigError(
                f"the index holds {index.dim}-d features but {self.recognizer.model_name} outputs "
                f"{self.feature_dim}-d ones; build the index with this pipeline's recognition model"
            )

    def load_index(self, index: IndexLike) -> FeatureIndex:
        """``index`` itself, or the index saved in that directory."""
        if isinstance(index, FeatureIndex):
            return index
        if isinstance(index, str | os.PathLike):
            return FeatureIndex.load(index)
        raise InvalidConfigError(
            f"index: expected a FeatureIndex or the directory of a saved index, got {type(index).__name__}"
        )

    def _index(self, index: IndexLike | None) -> FeatureIndex:
        if index is None:
            if self.index is None:
                raise InvalidConfigError(
                    "PP-ShiTuV2 needs an index: pass predict(..., index=...) (a FeatureIndex from build_index, or "
                    "a saved index directory), or set 'index' in the pipeline config"
                )
            idx = self.index
        else:
            idx = self.load_index(index)
        self._check_dim(idx)
        return idx

    def _embed_gallery(self, gallery_imgs: Any, gallery_label: Any) -> tuple[np.ndarray, list[str]]:
        items, labels = gallery_items(gallery_imgs, gallery_label)
        step = self.recognizer.fixed_batch or max(GALLERY_BATCH, self.config.recognition.batch_size)
        failures: list[ItemFailure] = []
        rows, kept_labels = [], []
        for start in range(0, len(items), step):
            chunk = items[start:start + step]
            loaded = read_items(chunk, failures)
            if loaded:
                rows.append(self.embed_images([rgb for _, rgb in loaded]))
                kept_labels.extend(labels[item.index] for item, _ in loaded)
        if failures:
            raise PredictionError(failures)
        logger.info("embedded %d gallery image(s) with %s", len(kept_labels), self.recognizer.model_name)
        return np.concatenate(rows), kept_labels

    def close(self) -> None:
        self.detector.close()
        self.recognizer.close()

    def __enter__(self) -> ShiTuPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gallery_items(gallery_imgs: Any, gallery_label: Any) -> tuple[list[InputItem], list[str]]:
    """Gallery images (as input items, in order) and their labels, from PaddleX's two ways of giving them."""
    if isinstance(gallery_label, str | os.PathLike):
        if gallery_imgs is not None and not isinstance(gallery_imgs, str | os.PathLike):
            raise InvalidInputError(
                "gallery_imgs: with a gallery file as gallery_label, give the directory its image paths are "
                f"relative to, not a {type(gallery_imgs).__name__}"
            )
        root = Path(gallery_imgs) if gallery_imgs is not None else None
        if root is not None and not root.is_dir():
            raise InvalidInputError(f"gallery_imgs: {root} is not a directory")
        pairs = read_gallery(gallery_label, image_root=root)
        return expand_inputs([str(path) for path, _ in pairs]), [label for _, label in pairs]
    if isinstance(gallery_label, Sequence) and not isinstance(gallery_label, bytes):
        labels = list(gallery_label)
        if not labels or not all(isinstance(x, str) and x for x in labels):
            raise InvalidInputError("gallery_label: expected a gallery.txt path or a list of non-empty label strings")
        items = expand_inputs(gallery_imgs)
        if len(items) != len(labels):
            raise InvalidInputError(f"gallery_imgs holds {len(items)} image(s) but gallery_label has {len(labels)} labels")
        return items, labels
    raise InvalidInputError(
        f"gallery_label: expected a gallery.txt path or a list of labels, got {type(gallery_label).__name__}"
    )


def read_ids(path: str | os.PathLike) -> list[int]:
    """Ids from a text file, one integer per line (blank lines skipped); errors give ``file:line``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidInputError(f"cannot read the id file {file}: {exc.strerror or exc}") from exc
    ids = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            ids.append(int(line))
        except ValueError:
            raise InvalidInputError(f"{file}:{number}: expected an integer id, got {line!r}") from None
    return ids
