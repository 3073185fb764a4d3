"""The ASGI app: PaddleX's serving protocol over hpi's pipelines.

>>> from hpi.serving import create_app, ServeSettings
>>> app = create_app("image_classification", ServeSettings(device="cpu"))
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8080)  # doctest: +SKIP

Every response, success or failure, has the protocol's shape (``logId``, ``errorCode``, ``errorMsg``); a failure's
``errorCode`` is its HTTP status: 400 unreadable input, 403 a URL the server may not fetch, 404 an unknown route or
index, 413 too large, 422 a body that does not match the schema, 500 a server fault, 503 overloaded or stopping,
504 timed out. No request can take the server down: every exception becomes one of these responses. The OpenAPI
schema is at ``/openapi.json`` (and ``/docs``); ``GET /health`` says which backend each model runs on; ``GET
/metrics`` serves Prometheus metrics.

The layers a request passes, outermost first: :class:`~hpi.serving.observability.ObserveMiddleware` (logId,
metrics, access log), :class:`~hpi.serving.auth.AuthMiddleware` (keys, before the body is read),
:class:`~hpi.serving.limits.BodyLimitMiddleware` (reads the body within its limit),
:class:`~hpi.serving.limits.ConcurrencyLimitMiddleware` (requests at once, counted once fully arrived),
:class:`ErrorGuardMiddleware`, then FastAPI's routes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hpi.errors import HpiError, InvalidConfigError
from hpi.serving.auth import AuthMiddleware
from hpi.serving.batching import yield_cpu_to_engines
from hpi.serving.common import ServeSettings, Service, error_response, log_id_of, new_log_id, ok_response
from hpi.serving.limits import BodyLimitMiddleware, ConcurrencyLimitMiddleware, error_body, status_for
from hpi.serving.observability import ObserveMiddleware, ServerMetrics
from hpi.serving.protocol import (
    HEALTH_ENDPOINT,
    INDEX_CHANGING_ENDPOINTS,
    METRICS_ENDPOINT,
    ErrorResponse,
    HealthResult,
    ResultResponse,
)
from hpi.version import __version__

logger = logging.getLogger(__name__)

PIPELINE_NAMES = ("image_classification", "PP-ShiTuV2")


def build_service(pipeline: Any, settings: ServeSettings) -> Service:
    """The service for a pipeline name, a pipeline YAML, a pipeline object or a predictor."""
    owned = isinstance(pipeline, str | os.PathLike)
    if owned:
        from hpi.pipelines import create_pipeline

        pipeline = create_pipeline(
            pipeline, device=settings.device, use_hpip=settings.use_hpip, hpi_config=settings.hpi_config,
            cache_dir=settings.cache_dir,
        )
    service: Service | None = None
    if callable(getattr(pipeline, "build_index", None)):
        from hpi.serving.shitu import ShiTuService

        service = ShiTuService(pipeline, settings)
    elif getattr(getattr(getattr(getattr(pipeline, "predictor", pipeline), "source", None), "spec", None), "task",
                 None) == "classification":
        from hpi.serving.classification import ClassificationService

        service = ClassificationService(pipeline, settings)
    if service is not None:
        service.owned = pipeline if owned else None
        return service
    raise InvalidConfigError(
        f"cannot serve {type(pipeline).__name__}: expected a pipeline name ({', '.join(PIPELINE_NAMES)}), a "
        "pipeline YAML, an image classification or PP-ShiTuV2 pipeline, or a classification predictor"
    )


def create_app(pipeline: Any, settings: ServeSettings | None = None, *, worker: int | None = None,
               metrics_dir: str | None = None) -> FastAPI:
    """An ASGI app serving ``pipeline`` with PaddleX's protocol.

    Args:
        pipeline: ``"image_classification"``, ``"PP-ShiTuV2"``, a pipeline YAML path, a pipeline made by
            :func:`hpi.create_pipeline`, or a classification predictor made by :func:`hpi.create_model`. Models are
            loaded here, so a missing model fails now rather than at the first request.
        settings: limits, batching, persistence; default :class:`ServeSettings`.
        worker, metrics_dir: for one of several worker processes (:mod:`hpi.serving.workers`): its index, and the
            directory where the workers add up their metrics.

    Returns:
        The FastAPI app; its model workers start and stop with the app's lifespan.
    """
    settings = settings or ServeSettings()
    service = build_service(pipeline, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield_cpu_to_engines(settings.loop_niceness)
        # The models' libraries leave hundreds of thousands of long-lived objects; every full collection walked them
        # all (the collector took about 10% of the event loop's CPU under load). Freezing exempts what exists now.
        gc.collect()
        gc.freeze()
        sharing = asyncio.create_task(_share_batcher_metrics(metrics)) if metrics and metrics.shared_dir else None
        try:
            yield
        finally:
            if sharing is not None:
                sharing.cancel()
            await service.stop()

    app = FastAPI(
        title=f"hpi serving: {service.pipeline_name}",
        version=__version__,
        description="PaddleX's serving protocol for hpi pipelines.",
        lifespan=lifespan,
    )
    app.state.service = service
    service.register_routes(app)
    _register_health(app, service, settings)
    metrics = ServerMetrics(service.batchers, shared_dir=metrics_dir, worker=worker) if settings.metrics else None
    if metrics is not None:
        _register_metrics(app, metrics)
    app.state.metrics = metrics
    app.state.access_log = settings.access_log
    _register_error_handlers(app)
    app.add_middleware(ErrorGuardMiddleware)  # each add_middleware wraps the ones before: the last is outermost
    # Inside the body limit, which reads the whole body first: a request counts against the limit only once it has
    # fully arrived, so slow senders cannot use it up (the body deadline bounds them instead).
    app.add_middleware(ConcurrencyLimitMiddleware, max_requests=settings.max_connections, exempt=(HEALTH_ENDPOINT,))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes)
    app.add_middleware(AuthMiddleware, auth=settings.auth, open_paths=[HEALTH_ENDPOINT],
                       admin_paths=INDEX_CHANGING_ENDPOINTS)
    endpoints = {route.path for route in app.routes if hasattr(route, "path")}
    app.add_middleware(ObserveMiddleware, metrics=metrics, endpoints=endpoints, access_log=settings.access_log)
    return app


async def _share_batcher_metrics(metrics: ServerMetrics, every_s: float = 1.0) -> None:
    """Write this worker's batcher counters where the other workers' scrapes read them, once a second."""
    while True:
        try:
            metrics.write_batchers()
        except OSError as exc:
            logger.warning("could not write the batcher metrics to %s: %s", metrics.shared_dir, exc)
        await asyncio.sleep(every_s)


class ErrorGuardMiddleware:
    """Answers any exception no handler took with a 500 in the protocol's shape.

    Starlette's own last-resort handler re-raises after responding, and uvicorn then drops the keep-alive
    connection; catching here keeps the connection and the client's next request working.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last resort: every request gets an answer
            log_id = scope.get("state", {}).get("log_id") or new_log_id()
            logger.error("logId %s: unexpected %s", log_id, type(exc).__name__, exc_info=exc)
            if started:
                return
            body = error_body(500, f"internal error ({type(exc).__name__}); see the server log for logId {log_id}",
                              log_id)
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


def _register_health(app: FastAPI, service: Service, settings: ServeSettings) -> None:
    async def health(request: Request) -> Any:
        # With keys set, a caller without one learns only that the server is up (no models, no traffic counters).
        detailed = not settings.auth.enabled or getattr(request.state, "auth_role", None) is not None
        result = HealthResult(
            status="ok" if service.healthy else "stopped",
            pipeline=service.pipeline_name,
            models=service.models() if detailed else None,
            batching={b.name: b.stats() for b in service.batchers} if detailed else None,
        )
        if not service.healthy:
            return error_response(request, 503, f"not serving: {service.pipeline_name} workers are not running")
        return ok_response(request, result.model_dump())

    app.add_api_route(HEALTH_ENDPOINT, health, methods=["GET"], response_model=ResultResponse[HealthResult],
                      responses={503: {"model": ErrorResponse}}, summary="Which backend each model runs on")


def _register_metrics(app: FastAPI, metrics: ServerMetrics) -> None:
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(content=body, media_type=content_type)

    app.add_api_route(METRICS_ENDPOINT, prometheus_metrics, methods=["GET"], include_in_schema=False)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 5
    return "invalid request body: " + "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


# Refusals the endpoints raise, by exception class, as counted in hpi_refusals_total.
_REFUSAL_REASONS = {"ServerBusyError": "queue_full", "ServiceStoppedError": "stopping",
                    "DecodeMemoryBusyError": "decode_memory", "PayloadTooLargeError": "too_large",
                    "UrlNotAllowedError": "url_not_allowed"}


def _register_error_handlers(app: FastAPI) -> None:
    async def on_http(request: Request, exc: StarletteHTTPException) -> Any:
        return error_response(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def on_validation(request: Request, exc: RequestValidationError) -> Any:
        return error_response(request, 422, _validation_message(exc))

    async def on_timeout(request: Request, exc: TimeoutError) -> Any:
        return error_response(request, 504, "the request timed out waiting for inference")

    async def on_hpi(request: Request, exc: HpiError) -> Any:
        status = status_for(exc)
        if status >= 500:
            logger.error("logId %s: %s: %s", log_id_of(request), type(exc).__name__, exc, exc_info=exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        reason = _REFUSAL_REASONS.get(type(exc).__name__)
        if reason:
            request.state.refusal = reason
        return error_response(request, status, str(exc), headers)

    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(TimeoutError, on_timeout)
    app.add_exception_handler(HpiError, on_hpi)
