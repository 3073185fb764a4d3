"""What every served pipeline shares: settings, the service interface, responses and the visualisation encoding."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import uuid
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from hpi.errors import InvalidConfigError
from hpi.serving.auth import AuthConfig
from hpi.serving.batching import BatchingConfig, DynamicBatcher
from hpi.serving.fetch import UrlFetcher
from hpi.serving.indexes import IndexQuotas
from hpi.serving.limits import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DecodeBudget,
    ServingLimits,
    check_pixels,
    decode_base64_image,
    decode_image_bytes,
    default_decode_budget_bytes,
    is_url,
)
from hpi.serving.protocol import ModelStatus

R = TypeVar("R")

# Base64 text up to this size is decoded on the event loop (about 0.1 ms per 100 KiB): handing a small image to the
# thread pool and back cost more CPU than decoding it, on the loop's thread and in wake-ups (load_test.md).
INLINE_BASE64_CHARS = 256 << 10


@dataclass(frozen=True)
class ServeSettings:
    """How the server runs. Defaults are safe for a server reachable by untrusted clients.

    Building a pipeline from its name uses ``device``, ``use_hpip``, ``hpi_config`` and ``cache_dir``; they are
    ignored when :func:`hpi.serving.app.create_app` is given a ready pipeline or predictor.
    """

    limits: ServingLimits = field(default_factory=ServingLimits)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)  # no keys: no authentication
    quotas: IndexQuotas = field(default_factory=IndexQuotas)  # PP-ShiTuV2 indexes built through the API
    request_timeout_s: float = 120.0  # a request waiting longer for its result gets 504
    drain_timeout_s: float = 30.0  # on shutdown, how long queued requests may still run before they get 503
    # Requests (headers complete) served at once by this process; more get 503 with Retry-After. A connection whose
    # request is still arriving does not count: the deadlines below bound how long it may take.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S  # a request's headers must arrive within this, else 408 and
    # the connection closes
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S  # and its body within this after the headers
    # Decoded images of all requests in hand, in bytes; past it a request waits up to decode_wait_s, then 503.
    # None: an eighth of the machine's (or container's) memory, at least 256 MiB.
    decode_memory_bytes: int | None = None
    decode_wait_s: float = 5.0
    metrics: bool = True  # GET /metrics (Prometheus text)
    access_log: bool = True  # one JSON line per request on the hpi.serving.access logger (INFO)
    visualize: bool = True  # result.image when a request does not say (its "visualize"); False sends null
    jpeg_quality: int = 75  # of the visualisation (Pillow's default, which PaddleX's serving uses)
    # The event loop and its helper threads run this much below the engine threads (Linux thread niceness), so HTTP
    # work does not preempt an inference mid-way on a machine without a spare core; 0 leaves priorities alone.
    loop_niceness: int = 15
    cpu_workers: int | None = None  # threads decoding images and encoding visualisations; None: cores + 1, max 4
    index_dir: str | None = None  # where indexes built through the API persist; None: see default_index_dir()
    default_index: str | None = None  # PP-ShiTuV2: a saved index used when a request has no indexKey
    device: str | None = None
    use_hpip: bool = False
    hpi_config: dict[str, Any] | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.request_timeout_s > 0:
            raise InvalidConfigError(f"request_timeout_s must be positive, got {self.request_timeout_s!r}")
        if not self.drain_timeout_s >= 0:
            raise InvalidConfigError(f"drain_timeout_s must not be negative, got {self.drain_timeout_s!r}")
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise InvalidConfigError(f"max_connections must be a positive integer, got {self.max_connections!r}")
        for name in ("header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise InvalidConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise InvalidConfigError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality!r}")
        if not isinstance(self.loop_niceness, int) or not 0 <= self.loop_niceness <= 19:
            raise InvalidConfigError(f"loop_niceness must be an integer in [0, 19], got {self.loop_niceness!r}")
        if self.cpu_workers is not None and self.cpu_workers < 1:
            raise InvalidConfigError(f"cpu_workers must be positive, got {self.cpu_workers!r}")

    def resolved_index_dir(self) -> Path:
        return Path(self.index_dir).expanduser() if self.index_dir else default_index_dir()


def default_index_dir() -> Path:
    """``$HPI_HOME/serving/indexes`` if ``HPI_HOME`` is set, else the per-user data directory's."""
    home = os.environ.get("HPI_HOME")
    if home:
        return Path(home).expanduser() / "serving" / "indexes"
    import platformdirs

    return Path(platformdirs.user_data_dir("hpi")) / "serving" / "indexes"


def new_log_id() -> str:
    """A random (version 4) UUID. Drawn from Python's PRNG rather than os.urandom: a logId names a request in the
    logs and is no secret, and the system call showed up in the server's profile."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def log_id_of(request: Request) -> str:
    """The request's logId, made once and kept on the request so that errors report the same one."""
    log_id = getattr(request.state, "log_id", None)
    if log_id is None:
        log_id = new_log_id()
        request.state.log_id = log_id
    return log_id


def ok_response(request: Request, result: Any) -> JSONResponse:
    return JSONResponse({"logId": log_id_of(request), "errorCode": 0, "errorMsg": "Success", "result": result})


def ok_body(log_id: str, result: Any) -> bytes:
    """A success response body as JSON bytes (built off the event loop for large results)."""
    return json.dumps({"logId": log_id, "errorCode": 0, "errorMsg": "Success", "result": result},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def _checked_base64_image(text: str, limits: ServingLimits, name: str) -> bytes:
    data = decode_base64_image(text, limits, name)
    check_pixels(data, limits, name)
    return data


def _decode_base64_image(text: str, limits: ServingLimits, name: str) -> Any:
    return decode_image_bytes(decode_base64_image(text, limits, name), limits, name)


def error_response(request: Request, status: int, message: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    return JSONResponse({"logId": log_id_of(request), "errorCode": status, "errorMsg": message}, status_code=status,
                        headers=headers)


def encode_jpeg_base64(image: Any, quality: int) -> str:
    """A PIL image as Base64 JPEG text."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def model_status(role: str, predictor: Any) -> ModelStatus:
    """What the health endpoint says about one loaded predictor."""
    choice = getattr(predictor, "choice", None)
    return ModelStatus(
        role=role,
        name=str(getattr(predictor, "model_name", "?")),
        backend=str(getattr(predictor, "backend", "?")),
        device=str(getattr(predictor, "device", "?")),
        precision=getattr(choice, "precision", None),
        mode=getattr(choice, "mode", None),
        weights=getattr(predictor, "weights", None),
    )


class Service(ABC):
    """One served pipeline: its routes, its model workers and batchers, and what the health endpoint reports."""

    pipeline_name: str

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.fetcher = UrlFetcher(settings.limits)
        workers = settings.cpu_workers or min(4, (os.cpu_count() or 1) + 1)
        self.cpu_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hpi-serve-cpu")
        self.batchers: list[DynamicBatcher[Any, Any]] = []
        self.decode_budget = DecodeBudget(settings.decode_memory_bytes or default_decode_budget_bytes(),
                                          settings.decode_wait_s)
        self.owned: Any = None  # a pipeline this service created, closed on stop()

    @abstractmethod
    def register_routes(self, app: FastAPI) -> None:
        """Add the pipeline's endpoints to ``app``."""

    @abstractmethod
    def models(self) -> list[ModelStatus]:
        """The loaded models, with the backend and device each runs on."""

    async def start(self) -> None:
        for batcher in self.batchers:
            batcher.start()

    async def stop(self) -> None:
        """Finish what is queued (at most ``drain_timeout_s``), then stop the workers and close what was opened."""
        await asyncio.gather(*(b.stop(self.settings.drain_timeout_s) for b in self.batchers))
        await self.fetcher.aclose()
        self.cpu_pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(self.owned, "close", None)
        if callable(close):  # a pipeline this service built: closed on its own thread, which then ends
            workers = list({id(b.worker): b.worker for b in self.batchers}.values())
            if workers:
                workers[0].run(close)
            else:
                close()
            for worker in workers:
                worker.close()

    @property
    def healthy(self) -> bool:
        return all(b.running for b in self.batchers)

    def visualize(self, asked: bool | None) -> bool:
        """Whether a response carries ``result.image``: the request's ``visualize``, else the server's setting."""
        return self.settings.visualize if asked is None else asked

    async def in_cpu_pool(self, fn: Any, /, *args: Any) -> Any:
        """Run CPU work (decoding, drawing, encoding) off the event loop and off the engine threads."""
        return await asyncio.get_running_loop().run_in_executor(self.cpu_pool, fn, *args)

    async def read_image(self, text: str, name: str) -> bytes:
        """An ``image`` field (Base64 or allowed URL) as encoded bytes whose header is within the limits."""
        if is_url(text):
            data = await self.fetcher.fetch(text, name)
            await self.in_cpu_pool(check_pixels, data, self.limits, name)
            return data
        if len(text) <= INLINE_BASE64_CHARS:
            return _checked_base64_image(text, self.limits, name)
        return await self.in_cpu_pool(_checked_base64_image, text, self.limits, name)

    async def load_image(self, text: str, name: str) -> Any:
        """An ``image`` field (Base64 or allowed URL) as a BGR uint8 array, within the limits."""
        if is_url(text):
            data = await self.fetcher.fetch(text, name)
            return await self.in_cpu_pool(decode_image_bytes, data, self.limits, name)
        return await self.in_cpu_pool(_decode_base64_image, text, self.limits, name)  # both steps off the loop

    async def submit(self, batcher: DynamicBatcher[Any, R], item: Any) -> R:
        """Queue ``item`` and wait for its result, at most ``request_timeout_s``."""
        return await asyncio.wait_for(batcher.submit(item), self.settings.request_timeout_s)
