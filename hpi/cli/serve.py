"""``hpi serve`` (and ``python -m hpi.serving``): serve a pipeline over HTTP with :func:`hpi.serving.app.create_app`
and uvicorn.

Importing this module imports neither FastAPI nor uvicorn, so ``hpi --help`` works without the ``serve`` extra.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from collections.abc import Sequence
from typing import Any

from hpi.cli.common import add_command, hpi_config_values
from hpi.errors import BackendUnavailableError, HpiError, InvalidConfigError

logger = logging.getLogger(__name__)

MiB = 1 << 20


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi serve`` to the main parser's subcommands."""
    return add_command(
        subparsers,
        "serve",
        add_arguments,
        run,
        help="serve a pipeline over HTTP with PaddleX's protocol",
        description=(
            "Serve image_classification (POST /image-classification) or PP-ShiTuV2 (POST /shitu-index-build, "
            "/shitu-index-add, /shitu-index-remove, /shitu-infer) with PaddleX's request and response bodies. "
            "GET /health says which backend each model runs on; the OpenAPI schema is at /openapi.json."
        ),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hpi serve`` (also ``python -m hpi.serving``)."""
    from hpi.serving import limits as limit_defaults
    from hpi.serving.batching import BatchingConfig
    from hpi.serving.indexes import IndexQuotas
    from hpi.serving.limits import ServingLimits

    limits, batching, quotas = ServingLimits(), BatchingConfig(), IndexQuotas()
    parser.add_argument("--pipeline", required=True, help="image_classification, PP-ShiTuV2, or a pipeline YAML")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    parser.add_argument("--device", default=None, help="cpu, gpu or gpu:N (default: gpu:0 if present, else cpu)")
    parser.add_argument("--use-hpip", action="store_true", help="high-performance mode (measured backend choice)")
    parser.add_argument("--backend", help="force a backend: paddle, onnxruntime, openvino, tensorrt")
    parser.add_argument("--threads", type=int, help="CPU threads per model (default: the machine's cores)")
    parser.add_argument("--streams", type=int, metavar="N",
                        help="with --backend openvino: streams per worker; a batch runs as N parts at once, the "
                             "threads shared between them (default: one stream)")
    parser.add_argument("--tuned", metavar="RECORD",
                        help="run the deployment 'hpi tune --target serve' wrote (its tune.json): it sets --use-hpip, "
                             "--backend, the precision, --workers, --threads, --streams, --max-batch, "
                             "--batch-window-ms, --no-visualize and --loop-niceness, replacing those options")

    g = parser.add_argument_group("batching")
    g.add_argument("--max-batch", type=_max_batch, default=batching.max_batch,
                   help=f"images per engine call (default: {batching.max_batch}), or 'auto': the batch size of 1-8 "
                        "that classifies fastest, measured at start (image_classification)")
    g.add_argument("--batch-window-ms", type=float, default=batching.window_ms,
                   help=f"how long a batch that is not full waits for more requests (default: {batching.window_ms})")
    g.add_argument("--max-queue", type=int, default=batching.max_queue,
                   help=f"requests waiting per model before 503 (default: {batching.max_queue})")
    g.add_argument("--request-timeout", type=float, default=120.0,
                   help="seconds a request may wait for inference before 504 (default: 120)")

    g = parser.add_argument_group("limits")
    g.add_argument("--max-body-mb", type=float, default=limits.max_body_bytes / MiB,
                   help=f"request body limit in MiB (default: {limits.max_body_bytes / MiB:g})")
    g.add_argument("--max-image-mb", type=float, default=limits.max_image_bytes / MiB,
                   help=f"encoded image limit in MiB (default: {limits.max_image_bytes / MiB:g})")
    g.add_argument("--max-megapixels", type=float, default=limits.max_pixels / 1e6,
                   help=f"decoded image limit in megapixels (default: {limits.max_pixels / 1e6:g})")
    g.add_argument("--max-images-per-request", type=int, default=limits.max_images_per_request,
                   help=f"imageLabelPairs per index request (default: {limits.max_images_per_request})")
    g.add_argument("--allow-url-host", action="append", default=[], metavar="HOST",
                   help="fetch image URLs from HOST (host, host:port, *.domain, or * for any host; repeatable). "
                        "Without it, URL inputs are refused. Whatever the host, the addresses it resolves to must be "
                        "public (not loopback, private, link-local, multicast, reserved) unless --allow-url-network "
                        "covers them, and the server connects to the address it checked")
    g.add_argument("--allow-url-network", action="append", default=[], metavar="CIDR",
                   help="fetch from addresses in CIDR even though they are internal (e.g. 10.1.2.0/24; repeatable)")
    g.add_argument("--url-timeout", type=float, default=limits.url_timeout_s,
                   help=f"seconds for the whole fetch of one URL, redirects included (default: {limits.url_timeout_s:g})")
    g.add_argument("--max-url-redirects", type=int, default=limits.url_max_redirects,
                   help=f"redirects followed per URL, each one checked again (default: {limits.url_max_redirects})")
    g.add_argument("--max-connections", type=int, default=limit_defaults.DEFAULT_MAX_CONNECTIONS,
                   help="requests served at once (per server, shared out among --workers) before the next gets 503 "
                        "with Retry-After; a connection still sending its request does not count "
                        f"(default: {limit_defaults.DEFAULT_MAX_CONNECTIONS})")
    g.add_argument("--decode-memory-mb", type=float, default=None,
                   help="MiB the decoded images of all requests in hand may take; past it a request waits up to 5 s, "
                        "then gets 503 with Retry-After (default: an eighth of the machine's or container's memory, "
                        "at least 256)")
    g.add_argument("--header-timeout", type=float, default=limit_defaults.DEFAULT_HEADER_TIMEOUT_S,
                   help="seconds a client may take to send a request's headers; then 408 and the connection closes "
                        f"(default: {limit_defaults.DEFAULT_HEADER_TIMEOUT_S:g})")
    g.add_argument("--body-timeout", type=float, default=limit_defaults.DEFAULT_BODY_TIMEOUT_S,
                   help="seconds a client may take to send a request's body after its headers; then 408 and the "
                        f"connection closes (default: {limit_defaults.DEFAULT_BODY_TIMEOUT_S:g})")

    g = parser.add_argument_group("authentication")
    g.add_argument("--api-key-file", metavar="FILE",
                   help="accept only requests with one of these keys (one per line, or sha256:<hex digest>), sent as "
                        "'Authorization: Bearer KEY' or 'X-API-Key: KEY'; GET /health stays open")
    g.add_argument("--admin-key-file", metavar="FILE",
                   help="keys needed by the index-changing endpoints (/shitu-index-build, -add, -remove); they are "
                        "accepted everywhere else too")

    g = parser.add_argument_group("PP-ShiTuV2")
    g.add_argument("--index-dir", help="where indexes built through the API are saved (default: "
                                       "$HPI_HOME/serving/indexes or the user data directory)")
    g.add_argument("--index", help="a saved index used by requests without indexKey")
    g.add_argument("--max-indexes", type=int, default=quotas.max_indexes,
                   help=f"indexes clients may build through the API (default: {quotas.max_indexes})")
    g.add_argument("--max-index-vectors", type=int, default=quotas.max_vectors_per_index,
                   help=f"items in one index (default: {quotas.max_vectors_per_index})")
    g.add_argument("--max-index-disk-mb", type=float, default=quotas.max_index_bytes / MiB,
                   help=f"MiB all API-built indexes may take on disk (default: {quotas.max_index_bytes / MiB:g})")

    g = parser.add_argument_group("operations")
    g.add_argument("--no-metrics", action="store_true", help="do not serve GET /metrics (Prometheus text)")
    g.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="on SIGTERM/SIGINT, seconds accepted requests may still take before they are cancelled "
                        "(default: 30)")
    g.add_argument("--loop-niceness", type=int, default=None,
                   help="run HTTP handling this much below the engine threads in CPU priority, so it does not "
                        "preempt inference on a busy machine (Linux; 0: off; default: ServeSettings.loop_niceness)")

    parser.add_argument("--no-visualize", action="store_true", help="send result.image as null (saves CPU)")
    parser.add_argument("--jpeg-quality", type=int, default=75, help="quality of result.image (default: 75)")
    parser.add_argument("--no-access-log", action="store_true",
                        help="do not log every request (one JSON line each, with the logId the response carries)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _add_engine_arguments(parser)


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine ray``: the same app in Ray Serve replicas (:mod:`hpi.scaleout.ray_serve`)."""
    g = parser.add_argument_group("engine")
    g.add_argument("--engine", choices=["uvicorn", "ray"], default="uvicorn",
                   help="uvicorn: this machine's processes (default); ray: Ray Serve replicas of the same app "
                        "(on --address, else RAY_ADDRESS, else a local cluster on 127.0.0.1), listening on --port "
                        "like the other variants")
    g.add_argument("--address", help="with --engine ray: the Ray cluster to join (HOST:PORT as 'ray start --head' "
                                     "prints it; default: RAY_ADDRESS, else a local cluster on 127.0.0.1)")
    g.add_argument("--workers", type=int, default=1,
                   help="with --engine uvicorn: server processes sharing the port, each with its own engine of "
                        "--threads threads (default: the cores / workers); image_classification only (default: 1)")
    g.add_argument("--replicas", type=int, default=2, help="with --engine ray: replicas (default: 2)")
    g.add_argument("--cpus-per-replica", type=float, help="with --engine ray: CPUs (and engine threads) per "
                                                          "replica (default: the cluster's CPUs / replicas)")


def _max_batch(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}") from None


def settings_from_args(args: argparse.Namespace) -> Any:
    """The :class:`hpi.serving.common.ServeSettings` the command line asks for."""
    from hpi.serving.auth import AuthConfig
    from hpi.serving.batching import BatchingConfig
    from hpi.serving.common import ServeSettings
    from hpi.serving.indexes import IndexQuotas
    from hpi.serving.limits import ServingLimits

    return ServeSettings(
        limits=ServingLimits(
            max_body_bytes=int(args.max_body_mb * MiB),
            max_image_bytes=int(args.max_image_mb * MiB),
            max_pixels=int(args.max_megapixels * 1e6),
            max_images_per_request=args.max_images_per_request,
            url_allow_hosts=frozenset(args.allow_url_host),
            url_allow_networks=frozenset(args.allow_url_network),
            url_timeout_s=args.url_timeout,
            url_max_redirects=args.max_url_redirects,
        ),
        batching=BatchingConfig(max_batch=args.max_batch, window_ms=args.batch_window_ms, max_queue=args.max_queue),
        auth=AuthConfig.from_files(args.api_key_file, args.admin_key_file),
        quotas=IndexQuotas(max_indexes=args.max_indexes, max_vectors_per_index=args.max_index_vectors,
                           max_index_bytes=int(args.max_index_disk_mb * MiB)),
        request_timeout_s=args.request_timeout,
        drain_timeout_s=args.graceful_timeout,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        decode_memory_bytes=int(args.decode_memory_mb * MiB) if args.decode_memory_mb else None,
        **({} if args.loop_niceness is None else {"loop_niceness": args.loop_niceness}),
        metrics=not args.no_metrics,
        access_log=not args.no_access_log,
        visualize=not args.no_visualize,
        jpeg_quality=args.jpeg_quality,
        index_dir=args.index_dir,
        default_index=args.index,
        device=args.device,
        use_hpip=args.use_hpip,
        hpi_config=hpi_config_values(args) or None,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, settings: Any) -> bool:
    """Log a warning when the server listens beyond this machine without keys; True when it warned."""
    if _is_loopback(host) or settings.auth.enabled:
        return False
    logger.warning(
        "listening on %s without API keys: anyone who can reach this address can use the server and build or delete "
        "indexes; start it with --api-key-file (and --admin-key-file), or bind 127.0.0.1", host)
    return True


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    # Intel OpenMP (Paddle Inference's runtime) spins 200 ms after every parallel region by default; a server runs a
    # batch every few tens of ms, so a spinning thread would hold a core that decoding and HTTP need. 1 ms still
    # covers the gaps between the regions of one inference. Set before Paddle starts its OpenMP runtime.
    os.environ.setdefault("KMP_BLOCKTIME", "1")
    from hpi.tune.record import apply_to_serve_args

    apply_to_serve_args(args)  # --tuned RECORD: its deployment's values replace the options it sets
    try:
        from hpi.serving.app import create_app
        from hpi.serving.server import HpiServer, server_config
    except ImportError as exc:
        raise BackendUnavailableError(
            f"hpi serve needs FastAPI and uvicorn ({exc.name} is missing); install them with: pip install 'hpi[serve]'"
        ) from exc
    settings = settings_from_args(args)
    warn_if_exposed(args.host, settings)
    if settings.access_log:
        from hpi.serving.observability import configure_access_log

        configure_access_log(args.log_level)
    if args.engine == "ray":
        if args.workers != 1:
            raise InvalidConfigError("--workers is for --engine uvicorn; with --engine ray use --replicas")
        from hpi.scaleout.ray_serve import serve_forever

        serve_forever(args.pipeline, settings, host=args.host, port=args.port, replicas=args.replicas,
                      cpus_per_replica=args.cpus_per_replica, address=args.address)
        return 0
    if args.address:
        raise InvalidConfigError("--address is for --engine ray")
    if args.workers != 1:
        from hpi.serving.workers import WorkerOptions, serve_workers

        return serve_workers(args.pipeline, settings, host=args.host, port=args.port, workers=args.workers,
                             options=WorkerOptions(log_level=args.log_level, graceful_timeout_s=args.graceful_timeout))
    app = create_app(args.pipeline, settings)
    # On SIGTERM uvicorn stops accepting connections, waits for accepted requests (at most --graceful-timeout), then
    # the app drains its queues and stops; HpiServer logs that and returns instead of re-raising the signal.
    HpiServer(server_config(app, settings, host=args.host, port=args.port, log_level=args.log_level,
                            graceful_timeout_s=args.graceful_timeout)).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hpi.serving ...``: ``hpi serve`` without the main CLI."""
    parser = argparse.ArgumentParser(prog="python -m hpi.serving", description="hpi serve")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        return run(args)
    except HpiError as exc:
        logger.error("%s", exc)
        return 2
