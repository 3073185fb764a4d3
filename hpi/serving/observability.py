"""Request ids, access logs and Prometheus metrics for the server.

:class:`ObserveMiddleware` is the outermost layer: it gives every request its ``logId`` (the UUID the protocol
returns) before anything else runs, so that a 401, a 413 and the endpoint's own answer all carry the id the access
log records; it counts and times every request, and writes one JSON line per request to the
``hpi.serving.access`` logger::

    {"logId": "…", "method": "POST", "path": "/image-classification", "status": 200, "ms": 41.2, "bytes": 5120,
     "client": "10.0.0.7", "role": "user"}

:class:`ServerMetrics` holds the app's own registry (not the process-global one, so several apps in one process do
not collide) and renders it at ``GET /metrics`` in Prometheus' text format:

* ``hpi_requests_total{endpoint,method,status}`` and ``hpi_request_duration_seconds{endpoint}`` (histogram);
* ``hpi_requests_in_flight``;
* ``hpi_refusals_total{reason}``: every request or connection hpi refused, by why: ``connection_limit``,
  ``header_timeout``, ``body_timeout``, ``malformed_request``, ``bad_content_length``, ``body_too_large``,
  ``unauthorized``, ``forbidden``, ``queue_full``, ``decode_memory``, ``stopping``. A refusal made before a request
  existed (a header timeout, a malformed request line) is counted here and in the access log, not in
  ``hpi_requests_total``;
* per model, read from its batcher at scrape time: ``hpi_batch_size`` (histogram of images per engine call),
  ``hpi_queue_depth``, ``hpi_engine_busy_seconds_total``, ``hpi_batches_total``, ``hpi_batch_items_total``,
  ``hpi_rejected_requests_total``, ``hpi_item_errors_total``, ``hpi_batch_errors_total``.

The endpoint label is the route's path for the app's routes and ``other`` for anything else, so scanning clients
cannot grow the label set.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from hpi.serving.limits import Receive, Scope, Send

access_logger = logging.getLogger("hpi.serving.access")

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
OTHER_ENDPOINT = "other"


class ServerMetrics:
    """The metrics of one app: request counters and latencies, plus the batchers' counters read at scrape time.

    Args:
        batchers: the service's :class:`hpi.serving.batching.DynamicBatcher` objects.
        shared_dir: for one of several worker processes (:mod:`hpi.serving.workers`): the directory where every
            worker keeps its counters (prometheus_client's multiprocess files, and each worker's batcher counters,
            written by :meth:`write_batchers`); the exposition then adds up all the workers'. The process must have
            started with ``PROMETHEUS_MULTIPROC_DIR`` set to it.
        worker: this worker's index (the ``worker`` label of its batcher metrics), with ``shared_dir``.
    """

    def __init__(self, batchers: Iterable[Any], shared_dir: str | None = None, worker: int | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        if shared_dir is not None:
            _check_multiprocess_mode(shared_dir)
        self.batchers = list(batchers)
        self.shared_dir, self.worker = shared_dir, worker
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("hpi_requests", "HTTP requests answered, by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("hpi_request_duration_seconds", "Time from request start to the last response byte",
                                 ["endpoint"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.refusals = Counter("hpi_refusals", "Requests and connections refused, by reason", ["reason"],
                                registry=self.registry)
        self.in_flight = Gauge("hpi_requests_in_flight", "Requests being answered", registry=self.registry,
                               multiprocess_mode="livesum")
        if shared_dir is None:
            self.registry.register(_BatcherCollector(self._live_rows, labels=("model",)))

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics as Prometheus text, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.shared_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        self.write_batchers()  # this worker's counters as of now; the others' are at most a second old
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.shared_dir)
        registry.register(_BatcherCollector(self._shared_rows, labels=("model", "worker")))
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def _live_rows(self) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        return [((b.name,), _batcher_row(b)) for b in self.batchers]

    def write_batchers(self) -> None:
        """Write this worker's batcher counters to the shared directory (atomically: a scrape never reads half)."""
        if self.shared_dir is None:
            return
        from hpi.storage import write_file_atomic

        rows = [{"name": b.name, **_batcher_row(b)} for b in self.batchers]
        write_file_atomic(os.path.join(self.shared_dir, f"batchers_worker{self.worker}.json"),
                          json.dumps(rows).encode("utf-8"))

    def _shared_rows(self) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        rows = []
        for name in sorted(os.listdir(self.shared_dir)):
            match = re.fullmatch(r"batchers_worker(\d+)\.json", name)
            if not match:
                continue
            try:
                with open(os.path.join(self.shared_dir, name), encoding="utf-8") as f:
                    entries = json.load(f)
            except (OSError, ValueError):  # a worker being replaced; its successor writes the file again
                continue
            rows.extend(((e.pop("name"), match.group(1)), e) for e in entries)
        return rows


def _check_multiprocess_mode(shared_dir: str) -> None:
    from prometheus_client import values

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") != shared_dir or not getattr(values.ValueClass, "_multiprocess",
                                                                                   False):
        raise RuntimeError(
            "shared metrics need PROMETHEUS_MULTIPROC_DIR set to the shared directory before prometheus_client is "
            "imported (hpi.serving.workers starts its workers so)")


def _batcher_row(batcher: Any) -> dict[str, Any]:
    stats = batcher.raw_stats()
    return {"batch_size_counts": list(stats.batch_size_counts), "batched_items": stats.batched_items,
            "queue_depth": batcher.queue_depth,
            **{attr: getattr(stats, attr) for attr in BATCHER_COUNTERS}}


BATCHER_COUNTERS = {
    "busy_s": ("hpi_engine_busy_seconds", "Wall time the engine thread spent in batches"),
    "batches": ("hpi_batches", "Engine calls"),
    "batched_items": ("hpi_batch_items", "Items that went into engine calls"),
    "rejected": ("hpi_rejected_requests", "Requests refused with 503 (queue full)"),
    "item_errors": ("hpi_item_errors", "Items answered with an error"),
    "batch_errors": ("hpi_batch_errors", "Engine calls that failed as a whole"),
}


class _BatcherCollector:
    """Renders batcher counters when Prometheus scrapes, so the batching hot path stays free of metric calls.

    Args:
        rows: called at each scrape; label values and a :func:`_batcher_row` per batcher.
        labels: the label names.
    """

    def __init__(self, rows: Callable[[], list[tuple[tuple[str, ...], dict[str, Any]]]],
                 labels: tuple[str, ...]) -> None:
        self.rows, self.labels = rows, list(labels)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        sizes = HistogramMetricFamily("hpi_batch_size", "Images per engine call", labels=self.labels)
        depth = GaugeMetricFamily("hpi_queue_depth", "Requests waiting for the engine", labels=self.labels)
        counters = {attr: CounterMetricFamily(name, doc, labels=self.labels)
                    for attr, (name, doc) in BATCHER_COUNTERS.items()}
        for labels, row in self.rows():
            cumulative, buckets = 0, []
            for size, count in enumerate(row["batch_size_counts"]):
                if size == 0:
                    continue
                cumulative += count
                buckets.append((str(float(size)), cumulative))
            buckets.append(("+Inf", cumulative))
            sizes.add_metric(list(labels), buckets, float(row["batched_items"]))
            depth.add_metric(list(labels), row["queue_depth"])
            for attr, family in counters.items():
                family.add_metric(list(labels), float(row[attr]))
        yield sizes
        yield depth
        yield from counters.values()


def record_refusal(metrics: ServerMetrics | None, reason: str, status: int, client: tuple[str, int] | None,
                   log_id: str, *, access_log: bool = True) -> None:
    """Count and log a refusal made below the app (a header timeout, a malformed request): there is no request for
    :class:`ObserveMiddleware` to see, so this writes the access-log line it would have written."""
    if metrics is not None:
        metrics.refusals.labels(reason).inc()
    if access_log and access_logger.isEnabledFor(logging.INFO):
        access_logger.info(json.dumps({"logId": log_id, "method": None, "path": None, "status": status, "ms": None,
                                       "bytes": None, "client": client[0] if client else None, "role": None,
                                       "refusal": reason}))


def configure_access_log(level: str) -> None:
    """Send the access log (one JSON line per request) to stdout, unless logging was configured for it already."""
    access_logger.setLevel(level.upper())
    if not access_logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_logger.addHandler(handler)
        access_logger.propagate = False


class ObserveMiddleware:
    """ASGI middleware, outermost: request id, metrics and the access log for every HTTP request.

    Args:
        app: the inner ASGI app.
        metrics: where requests are counted; None counts nothing.
        endpoints: the paths that get their own ``endpoint`` label.
        access_log: write one JSON line per request to ``hpi.serving.access`` (at INFO).
    """

    def __init__(self, app: Any, *, metrics: ServerMetrics | None, endpoints: Iterable[str], access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = frozenset(endpoints)
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from hpi.serving.common import new_log_id

        state = scope.setdefault("state", {})
        log_id = state.setdefault("log_id", new_log_id())
        start = time.perf_counter()
        status, sent = 500, 0

        async def observed_send(message: Any) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed_send)
        finally:
            seconds = time.perf_counter() - start
            path = scope.get("path", "")
            refusal = state.get("refusal")
            if refusal == "body_timeout":  # the connection layer answered 408 and closed the connection
                status = 408
            if metrics is not None:
                metrics.in_flight.dec()
                metrics.observe(path if path in self.endpoints else OTHER_ENDPOINT, scope.get("method", ""), status,
                                seconds)
                if refusal:
                    metrics.refusals.labels(refusal).inc()
            if self.access_log and access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client")
                line = {"logId": log_id, "method": scope.get("method"), "path": path[:200], "status": status,
                        "ms": round(seconds * 1000, 2), "bytes": sent, "client": client[0] if client else None,
                        "role": state.get("auth_role")}
                if refusal:
                    line["refusal"] = refusal
                access_logger.info(json.dumps(line))
