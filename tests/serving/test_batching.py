"""The dynamic batcher and the engine worker, without a model: batching, per-item errors, overload, one thread."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import pytest

from hpi.errors import InvalidInputError
from hpi.serving.batching import (
    BatchingConfig,
    DynamicBatcher,
    EngineWorker,
    ServerBusyError,
    ServiceStoppedError,
    fastest_batch_size,
    worker_for,
    yield_cpu_to_engines,
)

pytestmark = pytest.mark.serving


class Recorder:
    """A fake model: doubles numbers, fails on negative ones, records batches and the threads that ran them."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.delay = delay
        self.running = 0
        self.overlap = False

    def __call__(self, items: list[int]) -> list[object]:
        self.running += 1
        self.overlap |= self.running > 1
        self.threads.add(threading.get_ident())
        self.batches.append(list(items))
        time.sleep(self.delay)
        self.running -= 1
        if any(i == 999 for i in items):
            raise RuntimeError("engine exploded")
        return [InvalidInputError(f"item {i} is negative") if i < 0 else 2 * i for i in items]


def run(coro):
    return asyncio.run(coro)


async def _with_batcher(model, config, body):
    worker = EngineWorker("test")
    batcher = DynamicBatcher(model, worker, config, name="test")
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.stop()
        worker.close()


def test_concurrent_items_share_batches_and_results_go_back_to_their_requests():
    model = Recorder(delay=0.02)

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(i) for i in range(20))), batcher.stats()

    results, stats = run(_with_batcher(model, BatchingConfig(max_batch=8, window_ms=5), body))
    assert results == [2 * i for i in range(20)]
    assert max(len(b) for b in model.batches) == 8
    assert sum(len(b) for b in model.batches) == 20
    assert len(model.batches) <= 4
    assert stats["batches"] == len(model.batches) and stats["largestBatch"] == 8
    assert len(model.threads) == 1 and not model.overlap  # one thread owns the model, never two calls at once


def test_a_bad_item_fails_only_its_own_request():
    model = Recorder()

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(i) for i in (1, -2, 3, -4)), return_exceptions=True)

    out = run(_with_batcher(model, BatchingConfig(max_batch=4, window_ms=20), body))
    assert out[0] == 2 and out[2] == 6
    assert isinstance(out[1], InvalidInputError) and "item -2" in str(out[1])
    assert isinstance(out[3], InvalidInputError) and "item -4" in str(out[3])
    assert model.batches == [[1, -2, 3, -4]]


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    model = Recorder()

    async def body(batcher):
        first = await asyncio.gather(batcher.submit(999), batcher.submit(5), return_exceptions=True)
        second = await batcher.submit(7)
        return first, second, batcher.stats()

    first, second, stats = run(_with_batcher(model, BatchingConfig(max_batch=2, window_ms=20), body))
    assert all(isinstance(r, RuntimeError) for r in first)
    assert second == 14
    assert stats["batchErrors"] == 1 and stats["requests"] == 3


def test_a_full_queue_refuses_with_server_busy():
    model = Recorder(delay=0.2)

    async def body(batcher):
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)  # the first item is running; the queue (2 places) fills behind it
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(ServerBusyError):
            await batcher.submit(4)
        return await asyncio.gather(first, *queued), batcher.stats()

    results, stats = run(_with_batcher(model, BatchingConfig(max_batch=1, window_ms=0, max_queue=2), body))
    assert results == [2, 4, 6] and stats["rejected"] == 1


def test_a_lone_request_waits_for_the_window_then_runs_alone():
    """A lone request is held for the batching window (a timer cannot fire early: the lower bound is exact) and then
    runs as a batch of one; no upper bound on a wall clock, which a loaded machine can stretch."""
    model = Recorder()

    async def body(batcher):
        start = time.perf_counter()
        result = await batcher.submit(1)
        return result, time.perf_counter() - start

    result, elapsed = run(_with_batcher(model, BatchingConfig(max_batch=8, window_ms=30), body))
    assert result == 2 and elapsed >= 0.025
    assert model.batches == [[1]]


def test_cancelled_requests_are_not_run():
    model = Recorder(delay=0.1)

    async def body(batcher):
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.03)
        doomed = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0)
        doomed.cancel()
        kept = await batcher.submit(3)
        return await first, kept

    assert run(_with_batcher(model, BatchingConfig(max_batch=4, window_ms=0), body)) == (2, 6)
    assert [2] not in model.batches and all(2 not in b for b in model.batches)


def test_submit_after_stop_is_refused():
    async def body():
        worker = EngineWorker("t")
        batcher = DynamicBatcher(Recorder(), worker, name="t")
        batcher.start()
        await batcher.stop()
        worker.close()
        with pytest.raises(ServiceStoppedError):
            await batcher.submit(1)

    run(body())


def test_engine_worker_runs_every_call_on_one_thread():
    async def body():
        worker = EngineWorker("t")
        idents = await asyncio.gather(*(worker.call(threading.get_ident) for _ in range(10)))
        worker.close()
        return set(idents), worker.thread_ids

    idents, recorded = run(body())
    assert len(idents) == 1 and idents == set(recorded) and threading.get_ident() not in idents


def test_config_is_validated():
    from hpi.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match="max_batch"):
        BatchingConfig(max_batch=0)
    with pytest.raises(InvalidConfigError, match="max_batch"):
        BatchingConfig(max_batch="fast")
    assert BatchingConfig(max_batch="auto").max_batch == "auto"
    with pytest.raises(InvalidConfigError, match="window_ms"):
        BatchingConfig(window_ms=-1)


@pytest.mark.parametrize("drain_s", [30.0, 0.0])
def test_stop_finishes_queued_items_within_the_drain_time_and_answers_the_rest(drain_s):
    model = Recorder(delay=0.05)

    async def body():
        worker = EngineWorker("test")
        batcher = DynamicBatcher(model, worker, BatchingConfig(max_batch=2, window_ms=0, max_queue=64), name="test")
        batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(12)]
        await asyncio.sleep(0.01)  # the first batch is running, the rest are queued
        assert batcher.queue_depth == 10
        await batcher.stop(drain_s)
        with pytest.raises(ServiceStoppedError):
            await batcher.submit(99)
        worker.close()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = run(body())
    if drain_s:
        assert results == [2 * i for i in range(12)]
        assert [len(b) for b in model.batches] == [2] * 6
    else:  # no drain time: every request still gets an answer, a refusal, and the queued ones never ran
        assert all(isinstance(r, ServiceStoppedError) for r in results)
        assert len(model.batches) == 1


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread CPU priorities are a Linux feature")
def test_the_event_loop_yields_cpu_to_engine_threads_but_engines_keep_theirs():
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    model = Recorder()  # any model object can own a worker
    worker = worker_for(model, "priority-test")
    seen: dict[str, int] = {}

    def loop_thread() -> None:  # stands in for the event loop's thread, so the test process keeps its priority
        seen["before"] = niceness()
        assert yield_cpu_to_engines(3)
        seen["loop"] = niceness()
        seen["engine"] = worker.run(niceness)  # the engine thread was started before the change
        child = threading.Thread(target=lambda: seen.setdefault("helper", niceness()))
        child.start()
        child.join()

    thread = threading.Thread(target=loop_thread)
    thread.start()
    thread.join()
    worker.close()
    assert seen["loop"] == min(19, seen["before"] + 3) and seen["helper"] == seen["loop"]
    assert seen["engine"] == seen["before"]
    assert yield_cpu_to_engines(0) is False


def test_fastest_batch_size_measures_every_size_and_picks_the_most_items_per_second():
    cost_ms = {1: 4.0, 2: 5.0, 3: 6.0, 4: 16.0}  # per call: batch 3 gets through 0.5 items per ms, the most
    calls = []

    def run_batch(n):
        calls.append(n)
        time.sleep(cost_ms[n] / 1000)

    best, rates = fastest_batch_size(run_batch, sizes=(1, 2, 3, 4), seconds_each=0.05)
    assert best == 3 and list(rates) == [1, 2, 3, 4]
    assert rates[3] > rates[2] > rates[1] and rates[3] > rates[4]
    assert all(calls.count(n) >= 2 for n in (1, 2, 3, 4))  # a warm-up call, then at least one timed
