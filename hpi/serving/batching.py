"""Dynamic batching: concurrent requests share engine calls, and one thread owns each engine.

An engine is not thread-safe (PaddleX serialises every inference behind one lock for that reason), and serialising
is not even enough for Paddle Inference with oneDNN: a detector that had run on one thread failed with
``std::exception`` on a second thread after another model ran there (seen with PP-ShiTuV2's det + rec, both on
paddle). So each served model gets an :class:`EngineWorker` (:func:`worker_for`), a single thread that is the only
one ever to touch the model, for as long as the model lives, across apps: batched inference and exclusive jobs (an
index build's feature extraction) are queued to it in order, so no lock is needed and the event loop never runs
inference.

A :class:`DynamicBatcher` sits in front of a worker. Each request puts one item and a future on an asyncio queue
and awaits the future. A collector task takes the first waiting item, then whatever else is already queued, then
waits at most ``window_ms`` for more, up to ``max_batch`` items, and hands the batch to the worker. While the worker
runs a batch, new requests queue up, so under load batches fill without waiting and the window only matters when
the server is nearly idle. ``run_batch`` returns one entry per item, a result or an exception, and each goes back to
its own request: a bad image fails its request only. A batch-wide failure fails the batch's requests, and the
collector goes on with the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hpi.errors import HpiError, HpiInternalError, InvalidConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class ServerBusyError(HpiError):
    """The request queue is full; the client should retry later."""

    status_code = 503


class ServiceStoppedError(HpiError):
    """The server is shutting down and takes no more work."""

    status_code = 503


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are grouped into engine calls."""

    max_batch: int = 8  # items per engine call
    window_ms: float = 2.0  # how long a batch that is not full waits for more items (0: never waits)
    max_queue: int = 256  # items waiting per model; more are refused with 503

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidConfigError(f"BatchingConfig.{name} must be a positive integer, got {value!r}")
        if not 0 <= self.window_ms <= 1000:
            raise InvalidConfigError(f"BatchingConfig.window_ms must be in [0, 1000], got {self.window_ms!r}")


class EngineWorker:
    """One thread that owns a model: every call on the model runs there, one at a time, in submission order.

    Example:
        >>> worker = EngineWorker("demo")
        >>> asyncio.run(worker.call(sum, [1, 2, 3]))
        6
        >>> worker.close()
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hpi-engine-{name}")
        self._thread_ids: set[int] = set()

    async def call(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run ``fn(*args, **kwargs)`` on the worker thread and return (or raise) what it does."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._tracked, fn, *args, **kwargs))

    def run(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run ``fn(*args, **kwargs)`` on the worker thread from synchronous code, and wait for it."""
        return self._executor.submit(self._tracked, fn, *args, **kwargs).result()

    def _tracked(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        self._thread_ids.add(threading.get_ident())
        return fn(*args, **kwargs)

    @property
    def thread_ids(self) -> frozenset[int]:
        """Ids of the threads that ran calls: one, by construction (tests check it)."""
        return frozenset(self._thread_ids)

    def close(self, wait: bool = True) -> None:
        """Finish the running call (when ``wait``), drop queued ones, and end the thread."""
        self.closed = True
        self._executor.shutdown(wait=wait, cancel_futures=True)

    closed = False


_WORKERS: weakref.WeakKeyDictionary[Any, EngineWorker] = weakref.WeakKeyDictionary()
_WORKERS_LOCK = threading.Lock()


def yield_cpu_to_engines(niceness: int) -> bool:
    """Start every engine thread now, then lower the calling thread's CPU priority by ``niceness`` (Linux).

    Call it from the event loop's thread. Engine threads (and the OpenMP threads they start) keep the process's
    priority; the event loop and the threads it starts later (decoding, JSON) get the lower one, so on a machine
    with no spare core they stop preempting an inference in the middle of its parallel regions. Returns whether the
    priority was changed (False where the platform has no per-thread priorities).
    """
    if niceness <= 0 or not hasattr(os, "setpriority") or sys.platform != "linux":
        return False
    with _WORKERS_LOCK:
        workers = [w for w in _WORKERS.values() if not w.closed]
    for worker in workers:
        worker.run(lambda: None)  # creates the thread from here, at this thread's priority
    tid = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
    return True


def worker_for(model: Any, name: str) -> EngineWorker:
    """The thread that runs everything on ``model`` (a predictor or pipeline), the same one for the model's life.

    Call the model only through this worker while it is served: :meth:`EngineWorker.run` from synchronous code,
    :meth:`EngineWorker.call` from async code.
    """
    with _WORKERS_LOCK:
        worker = _WORKERS.get(model)
        if worker is None or worker.closed:
            worker = EngineWorker(name)
            _WORKERS[model] = worker
        return worker


@dataclass
class BatcherStats:
    """Counters since start; read them through :meth:`DynamicBatcher.stats`."""

    requests: int = 0  # items submitted
    batches: int = 0  # engine calls
    batched_items: int = 0  # items that went into engine calls (cancelled ones do not)
    largest_batch: int = 0
    item_errors: int = 0  # items answered with an error
    batch_errors: int = 0  # engine calls that failed as a whole
    rejected: int = 0  # items refused because the queue was full
    busy_s: float = 0.0  # wall time the worker spent in run_batch
    batch_size_counts: list[int] = field(default_factory=list)  # [n]: engine calls with n items


class DynamicBatcher(Generic[T, R]):
    """Groups concurrently submitted items into calls of ``run_batch`` on ``worker``.

    Args:
        run_batch: called on the worker thread with a list of items; returns one entry per item, in order: the
            item's result, or an exception that the item's submitter receives.
        worker: the thread that owns the model ``run_batch`` uses.
        config: window, maximum batch and queue length.
        name: for logs and stats.

    Use inside a running event loop: ``start()``, then ``await submit(item)`` from any number of tasks,
    then ``await stop()``.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R | BaseException]],
        worker: EngineWorker,
        config: BatchingConfig | None = None,
        *,
        name: str = "model",
    ) -> None:
        self.run_batch = run_batch
        self.worker = worker
        self.config = config or BatchingConfig()
        self.name = name
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stats = BatcherStats(batch_size_counts=[0] * (self.config.max_batch + 1))
        self._stopped = False
        self._batches_running = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the collector task on the running event loop."""
        if self.running:
            return
        self._queue = asyncio.Queue(maxsize=self.config.max_queue)
        self._stopped = False
        self._task = asyncio.get_running_loop().create_task(self._collect(), name=f"hpi-batcher-{self.name}")

    async def stop(self, drain_timeout_s: float = 0.0) -> None:
        """Stop taking items, finish the queued ones for at most ``drain_timeout_s``, then stop collecting; items
        still queued after that fail with :class:`ServiceStoppedError`."""
        self._stopped = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout_s
        while (self.running and self._queue is not None and (not self._queue.empty() or self._batches_running)
               and loop.time() < deadline):
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(ServiceStoppedError(f"{self.name}: the server is shutting down"))

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result.

        Raises:
            ServerBusyError: ``max_queue`` items are already waiting.
            ServiceStoppedError: the batcher is not running.
            Exception: whatever ``run_batch`` returned or raised for this item.
        """
        if self._stopped or self._queue is None or not self.running:
            raise ServiceStoppedError(f"{self.name}: not accepting requests (the server is not running)")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, fut))
        except asyncio.QueueFull:
            self._stats.rejected += 1
            raise ServerBusyError(
                f"{self.name}: {self.config.max_queue} requests are already waiting; retry later"
            ) from None
        self._stats.requests += 1
        return await fut

    @property
    def queue_depth(self) -> int:
        """Items waiting for the engine now."""
        return self._queue.qsize() if self._queue is not None else 0

    def raw_stats(self) -> BatcherStats:
        """The live counters (read, do not change)."""
        return self._stats

    def stats(self) -> dict[str, Any]:
        """Counters, the mean batch size and the current queue depth."""
        s = self._stats
        return {
            "requests": s.requests,
            "batches": s.batches,
            "meanBatchSize": round(s.batched_items / s.batches, 3) if s.batches else 0.0,
            "largestBatch": s.largest_batch,
            "itemErrors": s.item_errors,
            "batchErrors": s.batch_errors,
            "rejected": s.rejected,
            "busySeconds": round(s.busy_s, 3),
            "queueDepth": self.queue_depth,
            "maxBatch": self.config.max_batch,
            "windowMs": self.config.window_ms,
        }

    async def _next_batch(self, queue: asyncio.Queue[tuple[T, asyncio.Future[R]]]
                          ) -> list[tuple[T, asyncio.Future[R]]]:
        batch = [await queue.get()]
        limit = self.config.max_batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.window_ms / 1000
        while len(batch) < limit:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _collect(self) -> None:
        queue = self._queue
        if queue is None:
            raise HpiInternalError(f"{self.name}: collector started without a queue")
        while True:
            batch = await self._next_batch(queue)
            live = [(item, fut) for item, fut in batch if not fut.done()]  # a client that went away is skipped
            if not live:
                continue
            self._batches_running += 1
            try:
                await self._run(live)
            except asyncio.CancelledError:
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(ServiceStoppedError(f"{self.name}: the server is shutting down"))
                raise
            except BaseException as exc:  # noqa: BLE001 - the collector must outlive any failure
                logger.exception("%s: batcher failure (the collector goes on)", self.name)
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(HpiInternalError(f"{self.name}: batching failed: {exc!r}"))
            finally:
                self._batches_running -= 1

    def _timed(self, items: list[T]) -> Sequence[R | BaseException]:
        start = time.perf_counter()
        try:
            return self.run_batch(items)
        finally:
            self._stats.busy_s += time.perf_counter() - start

    async def _run(self, live: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in live]
        stats = self._stats
        stats.batches += 1
        stats.batched_items += len(items)
        stats.largest_batch = max(stats.largest_batch, len(items))
        stats.batch_size_counts[min(len(items), len(stats.batch_size_counts) - 1)] += 1
        try:
            results = await self.worker.call(self._timed, items)
        except Exception as exc:  # noqa: BLE001 - a batch-wide failure goes to every request of the batch
            stats.batch_errors += 1
            logger.warning("%s: a batch of %d failed: %s", self.name, len(items), exc)
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        if len(results) != len(items):
            raise HpiInternalError(f"{self.name}: run_batch returned {len(results)} results for {len(items)} items")
        for (_, fut), result in zip(live, results):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                stats.item_errors += 1
                fut.set_exception(result)
            else:
                fut.set_result(result)
