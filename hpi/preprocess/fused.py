"""The fused CPU preprocessing kernel: decoded (or encoded) images to a normalised batch in the fewest passes.

PaddleX runs, per image, resize, crop, a normalise that splits the channels, converts each to float32, scales,
shifts and merges them back, then a transpose, and finally stacks the batch: five full-size intermediate
arrays per image. Here each image goes through:

1. ``cv2.resize`` (uint8, PaddleX's interpolation and scale factors) into a per-thread scratch buffer, of only
   the top-left part of the image that covers the crop where that is bit-exact (all interpolations but BICUBIC);
2. ``cv2.split`` of the crop window (a view, no copy) into three per-thread uint8 planes;
3. ``cv2.LUT`` of each plane into its channel plane of the batch: 256-entry float32 tables hold
   ``float32(v) * alpha[c] + beta[c]`` computed with PaddleX's float32 operations, so the output is
   bit-identical to the reference chain while the per-pixel work is one table read.

From encoded bytes the image is decoded in OpenCV's BGR order and the channel flip happens for free in step 3
(the B plane is written to channel 2). Items of a batch run on a thread pool; OpenCV and libjpeg release the
GIL. Scratch buffers are per worker and grow only, so from arrays nothing is allocated per image once warm (from
bytes, OpenCV's ``imdecode`` allocates the decoded image: it has no output argument).

Parity with :mod:`hpi.preprocess.reference` (max abs difference of the float32 output):

* RGB arrays in: 0 (bit-identical).
* Encoded bytes in, full-size decode: 0 against ``decode_image`` followed by the reference.
* Encoded bytes in, ``reduced_decode=True``: not bit-identical for JPEGs whose short side is at least
  ``REDUCED_DECODE_MARGIN`` times the resize target (see :data:`REDUCED_DECODE_MARGIN`); every row records the
  reduction it was decoded at.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from hpi.errors import HpiInternalError, InvalidConfigError, InvalidInputError
from hpi.preprocess import reference
from hpi.preprocess.decode import decode, jpeg_header
from hpi.preprocess.spec import PreprocessSpec

_log = logging.getLogger(__name__)

# A reduced JPEG decode is used only when the reduced image's short side is at least this many times the resize
# target, so the remaining resize is still a downscale by 2x or more. Measured against a full decode, resized to
# 256 and cropped to 224, in uint8 levels: photos (skimage retina 1411x1411 at 1/2, astronaut upscaled to 4000x3000
# at 1/4, rocket upscaled to 2560x1708 at 1/2) mean 0.3-0.9, p99 3-7; tiled fine textures mean 3.4 (coffee) to 12
# (gravel), because INTER_LINEAR from full size aliases there while the DCT-scaled decode averages.
REDUCED_DECODE_MARGIN = 2.0

# Interpolations for which resizing only the top-left region that covers the crop (same origin, same scale
# factors) gives bit-identical pixels; checked on 6000 random geometries. Not BICUBIC: OpenCV's cubic uint8 kernel
# rounds a few pixels differently when the source width changes, so it always resizes the whole image.
_CUT_EXACT_INTERPOLATIONS = frozenset({"NEAREST", "LINEAR", "AREA", "LANCZOS4"})
_CUT_MARGIN = 6  # source pixels kept past the crop: covers LANCZOS4's 4-pixel reach, the widest kernel here

# Scratch buffers grow to the largest resized image seen, up to this many bytes; larger images use a temporary.
_MAX_SCRATCH_BYTES = 64 << 20

Item = bytes | bytearray | memoryview | np.ndarray


@dataclass(frozen=True)
class ItemError:
    """An item that could not be preprocessed; the rest of its batch went on."""

    index: int  # position in the input list
    name: str
    error: InvalidInputError


@dataclass(frozen=True)
class PreprocessedBatch:
    """The rows that succeeded, and what happened to the rest.

    ``batch[k]`` is the preprocessed input ``indices[k]``; items that failed are absent from ``batch`` and listed
    in ``errors``, so a bad item never costs the batch.
    """

    batch: np.ndarray  # float32 (or uint8 for ResizeCropU8), one row per item that succeeded, in input order
    indices: tuple[int, ...]  # input position of each row of ``batch``
    errors: tuple[ItemError, ...]
    reductions: tuple[int, ...]  # JPEG DCT reduction each row was decoded at; 1 = full size (always for arrays)

    @property
    def ok(self) -> bool:
        """True when every item succeeded."""
        return not self.errors


@dataclass
class PreparedImage:
    """One decoded item and where its output pixels come from."""

    image: np.ndarray  # uint8 HWC, 3 channels
    order: Literal["RGB", "BGR"]
    resized: tuple[int, int]  # (width, height) after the resize step
    box: tuple[int, int, int, int]  # crop (x1, y1, x2, y2) in the resized image
    reduction: int


class _Scratch(threading.local):
    """Per-thread buffers, so no worker allocates per image once warm."""

    def __init__(self) -> None:
        self.flat = np.empty(0, np.uint8)
        self.planes: list[np.ndarray] = []
        self.rgb = np.empty(0, np.uint8)

    def image(self, height: int, width: int) -> np.ndarray:
        """A (height, width, 3) uint8 array backed by the grow-only buffer (a temporary when very large)."""
        need = height * width * 3
        if need > _MAX_SCRATCH_BYTES:
            return np.empty((height, width, 3), np.uint8)
        if self.flat.size < need:
            self.flat = np.empty(need, np.uint8)
        return self.flat[:need].reshape(height, width, 3)

    def split_planes(self, height: int, width: int) -> list[np.ndarray]:
        if not self.planes or self.planes[0].shape != (height, width):
            self.planes = [np.empty((height, width), np.uint8) for _ in range(3)]
        return self.planes

    def rgb_image(self, height: int, width: int) -> np.ndarray:
        if self.rgb.shape != (height, width, 3):
            self.rgb = np.empty((height, width, 3), np.uint8)
        return self.rgb


class BatchKernel:
    """The machinery shared by the fused kernel and the in-graph path's CPU half.

    Subclasses say what one output row is (:meth:`_row_shape`, :attr:`dtype`) and how to write it
    (:meth:`_write`); this class decodes, resizes, records per-item errors and spreads the batch over threads.
    """

    dtype: type[np.generic] = np.float32

    def __init__(self, spec: PreprocessSpec, *, threads: int | None = None, reduced_decode: bool = False) -> None:
        if not isinstance(spec, PreprocessSpec):
            raise InvalidInputError(f"spec: expected a PreprocessSpec, got {type(spec).__name__}")
        if spec.resize_short is None and spec.resize_to is None:
            raise InvalidConfigError("spec: no resize step (give resize_short or resize_to)")
        if spec.resize_backend not in ("cv2", "pil"):
            raise InvalidConfigError(f"spec: resize_backend must be 'cv2' or 'pil', got {spec.resize_backend!r}")
        if threads is None:
            threads = _available_cpus()
            _log.debug("threads=None: using %d (the CPUs this process may run on); pass threads= to change", threads)
        if not isinstance(threads, int) or threads < 1:
            raise InvalidInputError(f"threads: expected a positive integer or None, got {threads!r}")
        self.spec = spec
        self.threads = threads
        self.reduced_decode = bool(reduced_decode)
        self._interpolation = reference.CV2_INTERPOLATION[spec.interpolation]
        self._trailing_cut = spec.interpolation in _CUT_EXACT_INTERPOLATIONS
        self._min_size = _reduced_min_size(spec) if reduced_decode else None
        self._scratch = _Scratch()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- public API -------------------------------------------------------------------------------------------

    @property
    def row_shape(self) -> tuple[int, ...] | None:
        """Shape of one output row, or None when the spec gives every image its own size (no crop, resize_short)."""
        size = self.spec.output_size
        return None if size is None else self._row_shape(size[0], size[1])

    def __call__(self, images: Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        """Preprocess RGB uint8 HWC arrays into one batch; the first bad item raises.

        Args:
            images: RGB uint8 arrays of shape (H, W, 3), as :func:`hpi.preprocess.decode.decode_image` returns.
            out: a C-contiguous array of this kernel's dtype with at least ``len(images)`` rows of
                :attr:`row_shape` to write into (reuse it across calls to avoid allocating); a new array when
                None.

        Returns:
            ``out[:len(images)]`` (or the new array).

        Raises:
            InvalidInputError: an image has the wrong type, dtype or shape, or is too small for the crop; the
                message names it by its position.
        """
        result = self._run(images, None, out, arrays_only=True)
        if result.errors:
            first = result.errors[0]
            more = f" ({len(result.errors) - 1} more item(s) failed too)" if len(result.errors) > 1 else ""
            raise InvalidInputError(f"{first.error}{more}") from first.error
        return result.batch

    def process(
        self,
        items: Sequence[Item],
        names: Sequence[str] | None = None,
        *,
        out: np.ndarray | None = None,
    ) -> PreprocessedBatch:
        """Preprocess a batch of encoded images and/or RGB arrays; a bad item is reported, not raised.

        Args:
            items: encoded image bytes (decoded here, on the worker threads) or RGB uint8 HWC arrays.
            names: how errors name each item; ``"item <i>"`` when None.
            out: as for :meth:`__call__`.

        Returns:
            The rows that succeeded, their input positions, and an :class:`ItemError` per failed item.
        """
        return self._run(items, names, out, arrays_only=False)

    def _run(
        self, items: Sequence[Item], names: Sequence[str] | None, out: np.ndarray | None, *, arrays_only: bool
    ) -> PreprocessedBatch:
        n = len(items)
        if names is None:
            names = [f"item {i}" for i in range(n)]
        elif len(names) != n:
            raise InvalidInputError(f"names: expected {n} names for {n} items, got {len(names)}")
        fixed = self.row_shape
        if fixed is None:
            return self._process_variable(items, names, out, arrays_only)
        out = self._output(out, n, fixed)
        failures: dict[int, InvalidInputError] = {}
        reductions = [1] * n

        def one(i: int) -> None:
            try:
                prepared = self._prepare(items[i], names[i], arrays_only)
                self._write(prepared, out[i])
                reductions[i] = prepared.reduction
            except InvalidInputError as exc:
                failures[i] = exc
            except cv2.error as exc:
                failures[i] = InvalidInputError(f"{names[i]}: OpenCV failed on this image: {exc.err or exc}")

        self._map(one, n)
        return _compact(out, n, names, failures, reductions)

    def preprocess_encoded(
        self, data: Sequence[bytes], names: Sequence[str] | None = None, *, out: np.ndarray | None = None
    ) -> PreprocessedBatch:
        """Decode and preprocess encoded images in one pass per item; see :meth:`process`.

        Example:
            >>> pre = FusedPreprocessor(spec, threads=2)
            >>> res = pre.preprocess_encoded([open(p, "rb").read() for p in paths], names=paths)
            >>> logits = engine.run(res.batch)            # rows for res.indices; res.errors name the rest
        """
        return self.process(data, names, out=out)

    def close(self) -> None:
        """Stop the worker threads (a later call starts them again)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> BatchKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for subclasses ---------------------------------------------------------------------------------------

    def _row_shape(self, width: int, height: int) -> tuple[int, ...]:
        raise NotImplementedError

    def _write(self, prepared: PreparedImage, row: np.ndarray) -> None:
        raise NotImplementedError

    def _resized_crop(self, prepared: PreparedImage) -> np.ndarray:
        """The crop window of the resized image, as a view into scratch memory (valid until the next item)."""
        src = prepared.image
        h, w = src.shape[:2]
        rw, rh = prepared.resized
        x1, y1, x2, y2 = prepared.box
        if self.spec.resize_backend == "pil":  # PaddleX's ResizeImage.backend: pil, with the reference's own call
            resized = reference.resize(self.spec, src, (rw, rh))
        elif (w, h) == (rw, rh):
            resized = src  # cv2.resize to the same size is a copy
        elif self._trailing_cut:
            # Resize only the top-left part of the image that reaches past the crop's right and bottom edges:
            # with the full image's scale factors and origin, OpenCV computes every kept pixel exactly as the
            # full resize does (the pixels past the crop are never made).
            x_end = min(w, math.ceil(x2 * w / rw) + _CUT_MARGIN)
            y_end = min(h, math.ceil(y2 * h / rh) + _CUT_MARGIN)
            fx, fy = rw / w, rh / h  # the same doubles cv2.resize derives from dsize / src size
            dst = self._scratch.image(round(y_end * fy), round(x_end * fx))
            resized = cv2.resize(src[:y_end, :x_end], None, dst=dst, fx=fx, fy=fy, interpolation=self._interpolation)
            if resized.shape[0] < y2 or resized.shape[1] < x2:
                raise HpiInternalError(f"partial resize to {resized.shape[1]}x{resized.shape[0]} misses the crop")
        else:
            dst = self._scratch.image(rh, rw)
            resized = cv2.resize(src, (rw, rh), dst=dst, interpolation=self._interpolation)
        return resized[y1:y2, x1:x2]

    # -- internals --------------------------------------------------------------------------------------------

    def _prepare(self, item: Item, name: str, arrays_only: bool) -> PreparedImage:
        reduction = 1
        if isinstance(item, np.ndarray):
            image, order = _checked_array(item, name), "RGB"
            full_w, full_h = image.shape[1], image.shape[0]
        elif arrays_only:
            raise InvalidInputError(
                f"{name}: expected an RGB uint8 array of shape (H, W, 3), got {type(item).__name__}"
            )
        else:
            decoded = decode(item, name, min_size=self._min_size, channel_order="BGR")
            image, order, reduction = decoded.image, "BGR", decoded.reduction
            full_w, full_h = image.shape[1], image.shape[0]
            if reduction > 1:
                # Resize to the size PaddleX would have used for the full-size image.
                header = jpeg_header(item)
                if header is None:
                    raise HpiInternalError(f"{name}: decoded at 1/{reduction} but its JPEG header is unreadable")
                full_w, full_h = header.upright_size
        resized = reference.resized_size(self.spec, full_w, full_h)
        try:
            box = reference.crop_box(self.spec, *resized)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{name} ({full_w}x{full_h}): {exc}") from exc
        return PreparedImage(image, order, resized, box, reduction)

    def _output(self, out: np.ndarray | None, n: int, row: tuple[int, ...]) -> np.ndarray:
        if out is None:
            return np.empty((n, *row), self.dtype)
        if (
            not isinstance(out, np.ndarray)
            or out.dtype != self.dtype
            or out.shape[1:] != row
            or out.shape[0] < n
            or not out.flags.c_contiguous
        ):
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise InvalidInputError(
                f"out: expected a C-contiguous {np.dtype(self.dtype)} array of shape (>={n}, {', '.join(map(str, row))})"
                f", got {got}"
            )
        return out

    def _process_variable(
        self, items: Sequence[Item], names: Sequence[str], out: np.ndarray | None, arrays_only: bool
    ) -> PreprocessedBatch:
        """No fixed output size: decode everything first, then all sizes must agree."""
        n = len(items)
        failures: dict[int, InvalidInputError] = {}
        prepared: dict[int, PreparedImage] = {}
        for i in range(n):
            try:
                prepared[i] = self._prepare(items[i], names[i], arrays_only)
            except InvalidInputError as exc:
                failures[i] = exc
        sizes = {i: (p.box[2] - p.box[0], p.box[3] - p.box[1]) for i, p in prepared.items()}
        first = next(iter(sizes.values()), (1, 1))
        for i, size in sizes.items():
            if size != first:
                failures[i] = InvalidInputError(
                    f"{names[i]}: preprocessed size {size[0]}x{size[1]} differs from the batch's "
                    f"{first[0]}x{first[1]}; this model's preprocessing keeps each image's aspect, use batch size 1"
                )
                del prepared[i]
        out = self._output(out, n, self._row_shape(*first))
        reductions = [1] * n
        for i, p in prepared.items():
            try:
                self._write(p, out[i])
                reductions[i] = p.reduction
            except cv2.error as exc:
                failures[i] = InvalidInputError(f"{names[i]}: OpenCV failed on this image: {exc.err or exc}")
        return _compact(out, n, names, failures, reductions)

    def _map(self, fn: Callable[[int], None], n: int) -> None:
        """Run ``fn(i)`` for i in range(n): inline for one item or one thread, else on the pool plus this thread."""
        workers = min(self.threads, n)
        if workers <= 1:
            for i in range(n):
                fn(i)
            return
        counter = itertools.count()  # next() on it is atomic under the GIL: work is handed out item by item

        def drain() -> None:
            while (i := next(counter)) < n:
                fn(i)

        pool = self._ensure_pool()
        futures: list[Future[None]] = [pool.submit(drain) for _ in range(workers - 1)]
        try:
            drain()
        finally:  # never return (or raise) while a worker may still write into the caller's buffer
            for future in futures:
                future.exception()
        for future in futures:
            future.result()

    def _ensure_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="hpi-preprocess")
            return self._pool


class FusedPreprocessor(BatchKernel):
    """PaddleX's classification preprocessing, fused: images to the model's float32 batch in one pass each.

    Args:
        spec: the preprocessing to realise (from the model's ``inference.yml``).
        threads: worker threads for a batch (the calling thread is one of them); the CPUs this process may run
            on when None.
        reduced_decode: let JPEGs much larger than the resize target decode at 1/2, 1/4 or 1/8 size (faster,
            not bit-identical to PaddleX; see :data:`REDUCED_DECODE_MARGIN`). Off by default.

    Example:
        >>> spec = PreprocessSpec.from_transform_ops(yaml["PreProcess"]["transform_ops"])
        >>> with FusedPreprocessor(spec, threads=2) as pre:
        ...     buf = np.empty((32, 3, 224, 224), np.float32)
        ...     batch = pre(rgb_images, out=buf)           # float32 (N, 3, 224, 224), written into buf
    """

    dtype = np.float32

    def __init__(self, spec: PreprocessSpec, *, threads: int | None = None, reduced_decode: bool = False) -> None:
        super().__init__(spec, threads=threads, reduced_decode=reduced_decode)
        values = np.arange(256, dtype=np.float32)
        # The same float32 operations as PaddleX's Normalize (v * alpha + beta), tabulated once.
        self._luts = [
            np.ascontiguousarray(values * np.float32(spec.scale / std) + np.float32(-mean / std), dtype=np.float32)
            for mean, std in zip(spec.mean, spec.std)
        ]
        self._lut3 = np.stack(self._luts, axis=1).reshape(1, 256, 3)

    def _row_shape(self, width: int, height: int) -> tuple[int, ...]:
        return (3, height, width) if self.spec.channels_first else (height, width, 3)

    def _write(self, prepared: PreparedImage, row: np.ndarray) -> None:
        crop = self._resized_crop(prepared)
        ch, cw = crop.shape[:2]
        if self.spec.channels_first:
            planes = cv2.split(crop, self._scratch.split_planes(ch, cw))
            for k in range(3):
                c = k if prepared.order == "RGB" else 2 - k
                plane = row[c]
                _into(cv2.LUT(planes[k], self._luts[c], dst=plane), plane)
        else:
            if prepared.order == "BGR":
                crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB, dst=self._scratch.rgb_image(ch, cw))
            _into(cv2.LUT(crop, self._lut3, dst=row), row)


def _into(result: np.ndarray, dst: np.ndarray) -> None:
    """OpenCV writes into ``dst`` when it fits; copy when the binding had to allocate instead."""
    if result is not dst:
        np.copyto(dst, result.reshape(dst.shape))


def _checked_array(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(
            f"{name}: expected an RGB uint8 array of shape (H, W, 3), got {image.dtype} array of shape {image.shape}"
        )
    return image


def _compact(
    out: np.ndarray, n: int, names: Sequence[str], failures: dict[int, InvalidInputError], reductions: list[int]
) -> PreprocessedBatch:
    """Move the good rows to the front, in input order; the failed rows' slots are overwritten."""
    good = [i for i in range(n) if i not in failures]
    for row, i in enumerate(good):
        if row != i:
            out[row] = out[i]
    errors = tuple(ItemError(i, names[i], failures[i]) for i in sorted(failures))
    return PreprocessedBatch(out[: len(good)], tuple(good), errors, tuple(reductions[i] for i in good))


def _reduced_min_size(spec: PreprocessSpec) -> int | tuple[int, int]:
    if spec.resize_short is not None:
        return math.ceil(spec.resize_short * REDUCED_DECODE_MARGIN)
    assert spec.resize_to is not None  # checked in BatchKernel.__init__
    return (math.ceil(spec.resize_to[0] * REDUCED_DECODE_MARGIN), math.ceil(spec.resize_to[1] * REDUCED_DECODE_MARGIN))


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
