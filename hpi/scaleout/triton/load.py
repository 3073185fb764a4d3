"""A load test of a served repository with Triton's own HTTP client library (``tritonclient``).

``perf_analyzer`` is Triton's load tool, but its PyPI wheels need glibc 2.38 and tritonclient's bundled copy needs
CUDA 12 libraries; this runs anywhere tritonclient installs. ``concurrency`` threads, each with its own client
(one keep-alive connection), send the images in turn back to back for ``duration_s`` seconds after a warm-up;
every response is checked (the entry model's outputs present, or ``errorCode`` 0 for the PaddleX layout).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpi.errors import InvalidConfigError


@dataclass(frozen=True)
class LoadResult:
    """What the load test measured."""

    model: str
    concurrency: int
    requests: int  # answered correctly within the measured window
    errors: int
    seconds: float
    throughput: float  # requests (one image each) per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    first_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _request(httpclient: Any, model: str, data: bytes) -> tuple[list[Any], list[Any]]:
    """The inputs and outputs of one request: the hpi layout's ``IMAGE`` bytes, or PaddleX's JSON body."""
    if model == "image-classification":
        import base64

        body = json.dumps({"image": base64.b64encode(data).decode("ascii"), "visualize": False}).encode()
        inp = httpclient.InferInput("input", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[body]], dtype=np.object_))
        return [inp], [httpclient.InferRequestedOutput("output")]
    inp = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return [inp], [httpclient.InferRequestedOutput("CLASS_IDS")]


def _check(model: str, result: Any) -> None:
    if model == "image-classification":
        body = json.loads(result.as_numpy("output")[0, 0])
        if body.get("errorCode") != 0:
            raise RuntimeError(f"errorCode {body.get('errorCode')}: {body.get('errorMsg')}")
    elif result.as_numpy("CLASS_IDS") is None:
        raise RuntimeError("the response has no CLASS_IDS")


def run_load_test(url: str, model: str, images: Sequence[bytes], *, concurrency: int = 4, duration_s: float = 10.0,
                  warmup_s: float = 2.0, timeout_s: float = 60.0) -> LoadResult:
    """Send ``images`` to ``model`` at ``url`` from ``concurrency`` threads for ``duration_s`` seconds.

    Args:
        url: the server's HTTP ``host:port``.
        model: the entry model (``NAME_ensemble``, or ``image-classification`` for the PaddleX layout).
        images: encoded images, sent in turn.
        concurrency: requests in flight at once.
        duration_s: the measured window, after ``warmup_s`` seconds whose requests are not counted.

    Raises:
        InvalidConfigError: no images, or a concurrency / duration that is not positive.
    """
    import tritonclient.http as httpclient

    if not images:
        raise InvalidConfigError("images: expected at least one encoded image")
    if concurrency < 1 or duration_s <= 0 or warmup_s < 0:
        raise InvalidConfigError(f"concurrency {concurrency} and duration_s {duration_s} must be positive, "
                                 f"warmup_s {warmup_s} not negative")
    start = time.monotonic() + warmup_s
    stop = start + duration_s
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    first_error: list[str] = []

    def worker(slot: int) -> None:
        client = httpclient.InferenceServerClient(url, network_timeout=timeout_s, connection_timeout=timeout_s)
        try:
            i = slot
            while True:
                sent = time.monotonic()
                if sent >= stop:
                    return
                inputs, outputs = _request(httpclient, model, images[i % len(images)])
                i += 1
                try:
                    _check(model, client.infer(model, inputs, outputs=outputs))
                    ok = True
                except Exception as exc:  # noqa: BLE001 - counted and reported, the load goes on
                    ok = False
                    if not first_error:
                        first_error.append(f"{type(exc).__name__}: {exc}")
                done = time.monotonic()
                if sent >= start and done <= stop:
                    if ok:
                        latencies[slot].append(done - sent)
                    else:
                        errors[slot] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=warmup_s + duration_s + timeout_s + 10)
    done_ms = np.array([x for xs in latencies for x in xs]) * 1e3
    pct = (lambda q: float(np.percentile(done_ms, q))) if len(done_ms) else (lambda q: float("nan"))
    return LoadResult(model, concurrency, int(len(done_ms)), sum(errors), duration_s, len(done_ms) / duration_s,
                      pct(50), pct(90), pct(99), first_error[0] if first_error else None)
