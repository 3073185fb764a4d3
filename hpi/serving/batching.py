"""Dynamic batching: concurrent requests share engine calls, and one thread owns each engine.

An engine is not thread-safe (PaddleX serialises every inference behind one lock for that reason), and serialising
is not even enough for Paddle Inference with oneDNN: a detector that had run on one thread failed with
``std::exception`` on a second thread after another model ran there (seen with PP-ShiTuV2's det + rec, both on
paddle). So each served model gets an :class:`EngineWorker` (:func:`worker_for`), a single thread that is the only
one ever to touch the model, for as long as the model lives, across apps: batched inference and exclusive jobs (an
index build's feature extraction) are queued to it in order, so no lock is needed and the event loop never runs
inference.

A :class:`DynamicBatcher` sits in front of a worker. Each request puts one item and a future on the batcher's
queue (a deque under a lock) and awaits the future. The worker thread itself takes the batches: the first waiting
item, then whatever else is queued, then it waits at most ``window_ms`` for more, up to ``max_batch`` items; it runs
the batch and hands all its results back to the event loop in one call, then takes the next batch at once. So under
load the engine never waits for the event loop to hand it work (the loop runs at a lower CPU priority than the
engine, see :func:`yield_cpu_to_engines`, and a hand-off through it cost the engine several percent of its time),
and the window only matters when the server is nearly idle. ``run_batch`` returns one entry per item, a result or an
exception, and each goes back to its own request: a bad image fails its request only. A batch-wide failure fails
the batch's requests, and the worker goes on with the next batch. The worker serves batches for at most
``SERVE_SLICE_S`` at a time, so exclusive jobs queued to the same thread (an index build) get their turn under load.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hpi.errors import HpiError, HpiInternalError, InvalidConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SERVE_SLICE_S = 0.25  # a worker serves batches this long, then lets the jobs queued behind it run


class ServerBusyError(HpiError):
    """The request queue is full; the client should retry later."""

    status_code = 503


class ServiceStoppedError(HpiError):
    """The server is shutting down and takes no more work."""

    status_code = 503


AUTO_BATCH = "auto"
AUTO_BATCH_SIZES = tuple(range(1, 9))


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are grouped into engine calls."""

    # Items per engine call, or "auto" (image classification): the batch size of 1..8 that classifies the most
    # images per second, measured when the server starts (fastest_batch_size).
    max_batch: int | str = 8
    window_ms: float = 2.0  # how long a batch that is not full waits for more items (0: never waits)
    max_queue: int = 256  # items waiting per model; more are refused with 503

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue"):
            value = getattr(self, name)
            if name == "max_batch" and value == AUTO_BATCH:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidConfigError(f"BatchingConfig.{name} must be a positive integer, got {value!r}")
        if not 0 <= self.window_ms <= 1000:
            raise InvalidConfigError(f"BatchingConfig.window_ms must be in [0, 1000], got {self.window_ms!r}")


def fastest_batch_size(run_batch: Callable[[int], object], sizes: Sequence[int] = AUTO_BATCH_SIZES,
                       seconds_each: float = 0.5) -> tuple[int, dict[int, float]]:
    """The batch size at which ``run_batch(n)`` (one engine call on ``n`` items) gets through the most items per
    second, and each size's rate. Each size runs one warm-up call, then calls for ``seconds_each`` (at least one).

    A larger batch is not always faster per item (Paddle's ResNet50 on a 2-core AMD EPYC ran about 10% fewer images
    per second at batch 8 than at 2-3), and a server at a slower batch size serves at that size's rate.
    """
    rates: dict[int, float] = {}
    for n in sizes:
        run_batch(n)
        done, start = 0, time.perf_counter()
        while True:
            run_batch(n)
            done += n
            elapsed = time.perf_counter() - start
            if elapsed >= seconds_each:
                break
        rates[n] = done / elapsed
    return max(rates, key=rates.__getitem__), rates


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
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hpi-engine-{name}",
                                            initializer=_name_os_thread, initargs=("hpi-engine",))
        self._thread_ids: set[int] = set()

    async def call(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run ``fn(*args, **kwargs)`` on the worker thread and return (or raise) what it does."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._tracked, fn, *args, **kwargs))

    def run(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run ``fn(*args, **kwargs)`` on the worker thread from synchronous code, and wait for it."""
        return self.submit(fn, *args, **kwargs).result()

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        """Queue ``fn(*args, **kwargs)`` to the worker thread without waiting for it."""
        return self._executor.submit(self._tracked, fn, *args, **kwargs)

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


def _name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` (at most 15 bytes) in the operating system too (Linux), so ``top -H`` and
    ``/proc/<pid>/task/*/comm`` show which thread is the engine's (the load test reads CPU per thread from there)."""
    if sys.platform != "linux":
        return
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # a libc without prctl: the name is cosmetic
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


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
        self._stats = BatcherStats(batch_size_counts=[0] * (self.config.max_batch + 1))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cond = threading.Condition()  # guards _pending and _serving
        self._pending: collections.deque[tuple[T, asyncio.Future[R]]] = collections.deque()
        self._serving = False  # a serving job is queued to the worker or running there
        self._accepting = False
        self._in_flight: dict[int, list[tuple[T, asyncio.Future[R]]]] = {}  # batches taken, not yet answered

    @property
    def running(self) -> bool:
        return self._accepting and not self.worker.closed

    def start(self) -> None:
        """Accept items from the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._accepting = True

    async def stop(self, drain_timeout_s: float = 0.0) -> None:
        """Stop taking items, finish the queued ones for at most ``drain_timeout_s``, then answer what is still
        queued or running with :class:`ServiceStoppedError`."""
        self._accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout_s
        while (self._pending or self._in_flight) and not self.worker.closed and loop.time() < deadline:
            await asyncio.sleep(0.005)
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
        for batch in list(self._in_flight.values()):
            left += batch
        self._in_flight.clear()
        for _, fut in left:
            if not fut.done():
                fut.set_exception(ServiceStoppedError(f"{self.name}: the server is shutting down"))

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result.

        Raises:
            ServerBusyError: ``max_queue`` items are already waiting.
            ServiceStoppedError: the batcher is not running.
            Exception: whatever ``run_batch`` returned or raised for this item.
        """
        if not self._accepting or self._loop is None:
            raise ServiceStoppedError(f"{self.name}: not accepting requests (the server is not running)")
        fut: asyncio.Future[R] = self._loop.create_future()
        with self._cond:
            if len(self._pending) >= self.config.max_queue:
                self._stats.rejected += 1
                raise ServerBusyError(
                    f"{self.name}: {self.config.max_queue} requests are already waiting; retry later"
                )
            self._pending.append((item, fut))
            self._stats.requests += 1
            start_serving, self._serving = not self._serving, True
            self._cond.notify()
        if start_serving:  # after the other requests of this loop iteration queued theirs: they share the batch
            self._loop.call_soon(self._start_serving)
        return await fut

    @property
    def queue_depth(self) -> int:
        """Items waiting for the engine now."""
        return len(self._pending)

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

    # -- the worker thread's side -----------------------------------------------------------------------------

    def _start_serving(self) -> None:
        try:
            self.worker.submit(self._serve)
        except RuntimeError:  # the worker was closed: nothing will run the queued items
            with self._cond:
                self._serving = False
            logger.warning("%s: the engine worker is closed; queued requests are answered at stop", self.name)

    def _serve(self) -> None:
        """On the worker thread: run batches while items wait, for at most ``SERVE_SLICE_S``."""
        deadline = time.perf_counter() + SERVE_SLICE_S
        try:
            while (batch := self._take()) is not None:
                live = [(item, fut) for item, fut in batch if not fut.done()]  # a client that went away is skipped
                if live:
                    self._run(live)
                if time.perf_counter() > deadline:
                    self._start_serving()  # behind the jobs queued meanwhile; _serving stays True
                    return
        except BaseException:
            with self._cond:
                self._serving = False
            logger.exception("%s: batch worker failure", self.name)
            raise

    def _take(self) -> list[tuple[T, asyncio.Future[R]]] | None:
        """The next batch: what is queued, plus what arrives within the window, up to ``max_batch`` items; None
        (and no serving job any more) when nothing is queued."""
        with self._cond:
            if not self._pending:
                self._serving = False
                return None
            batch = [self._pending.popleft()]
            limit = self.config.max_batch
            deadline = time.monotonic() + self.config.window_ms / 1000
            while len(batch) < limit:
                if self._pending:
                    batch.append(self._pending.popleft())
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._accepting:
                    break
                self._cond.wait(remaining)
            return batch

    def _run(self, live: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in live]
        stats = self._stats
        stats.batches += 1
        stats.batched_items += len(items)
        stats.largest_batch = max(stats.largest_batch, len(items))
        stats.batch_size_counts[min(len(items), len(stats.batch_size_counts) - 1)] += 1
        key = id(live)
        self._in_flight[key] = live
        results: Sequence[R | BaseException] | None = None
        error: BaseException | None = None
        start = time.perf_counter()
        try:
            results = self.run_batch(items)
            if len(results) != len(items):
                error = HpiInternalError(f"{self.name}: run_batch returned {len(results)} results for "
                                         f"{len(items)} items")
        except Exception as exc:  # noqa: BLE001 - a batch-wide failure goes to every request of the batch
            error = exc
        finally:
            stats.busy_s += time.perf_counter() - start
        loop = self._loop
        try:
            if loop is not None:
                loop.call_soon_threadsafe(self._answer, key, live, results, error)
        except RuntimeError:  # the event loop is closed: nobody waits for these answers any more
            self._in_flight.pop(key, None)

    def _answer(self, key: int, live: list[tuple[T, asyncio.Future[R]]],
                results: Sequence[R | BaseException] | None, error: BaseException | None) -> None:
        """On the event loop: one call per batch gives every request of the batch its result or error."""
        self._in_flight.pop(key, None)
        stats = self._stats
        if error is not None or results is None:
            stats.batch_errors += 1
            if isinstance(error, HpiInternalError):
                logger.error("%s: %s", self.name, error)
            else:
                logger.warning("%s: a batch of %d failed: %s", self.name, len(live), error)
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(error or HpiInternalError(f"{self.name}: a batch gave no results"))
            return
        for (_, fut), result in zip(live, results):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                stats.item_errors += 1
                fut.set_exception(result)
            else:
                fut.set_result(result)
