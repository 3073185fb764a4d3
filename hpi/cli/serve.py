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

from hpi.cli.common import add_command, hpi_config_from_args
from hpi.errors import BackendUnavailableError, HpiError

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
    from hpi.serving.batching import BatchingConfig
    from hpi.serving.limits import ServingLimits

    limits, batching = ServingLimits(), BatchingConfig()
    parser.add_argument("--pipeline", required=True, help="image_classification, PP-ShiTuV2, or a pipeline YAML")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    parser.add_argument("--device", default=None, help="cpu, gpu or gpu:N (default: gpu:0 if present, else cpu)")
    parser.add_argument("--use-hpip", action="store_true", help="high-performance mode (measured backend choice)")
    parser.add_argument("--backend", help="force a backend: paddle, onnxruntime, openvino, tensorrt")
    parser.add_argument("--threads", type=int, help="CPU threads per model (default: the machine's cores)")

    g = parser.add_argument_group("batching")
    g.add_argument("--max-batch", type=int, default=batching.max_batch,
                   help=f"images per engine call (default: {batching.max_batch})")
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
                   help="fetch image URLs from HOST (host, host:port or *.domain; repeatable). Without it, URL "
                        "inputs are refused: a server that fetches any URL is an SSRF hole")
    g.add_argument("--max-connections", type=int, default=512,
                   help="concurrent connections before uvicorn answers 503 (default: 512)")

    g = parser.add_argument_group("PP-ShiTuV2")
    g.add_argument("--index-dir", help="where indexes built through the API are saved (default: "
                                       "$HPI_HOME/serving/indexes or the user data directory)")
    g.add_argument("--index", help="a saved index used by requests without indexKey")

    parser.add_argument("--no-visualize", action="store_true", help="send result.image as null (saves CPU)")
    parser.add_argument("--jpeg-quality", type=int, default=75, help="quality of result.image (default: 75)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _add_engine_arguments(parser)


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine ray``: the same app in Ray Serve replicas (:mod:`hpi.scaleout.ray_serve`)."""
    g = parser.add_argument_group("engine")
    g.add_argument("--engine", choices=["uvicorn", "ray"], default="uvicorn",
                   help="uvicorn: one process (default); ray: Ray Serve replicas of the same app (RAY_ADDRESS, or "
                        "a local cluster on 127.0.0.1)")
    g.add_argument("--replicas", type=int, default=2, help="with --engine ray: replicas (default: 2)")
    g.add_argument("--cpus-per-replica", type=float, help="with --engine ray: CPUs (and engine threads) per "
                                                          "replica (default: the cluster's CPUs / replicas)")


def settings_from_args(args: argparse.Namespace) -> Any:
    """The :class:`hpi.serving.common.ServeSettings` the command line asks for."""
    from hpi.serving.batching import BatchingConfig
    from hpi.serving.common import ServeSettings
    from hpi.serving.limits import ServingLimits

    return ServeSettings(
        limits=ServingLimits(
            max_body_bytes=int(args.max_body_mb * MiB),
            max_image_bytes=int(args.max_image_mb * MiB),
            max_pixels=int(args.max_megapixels * 1e6),
            max_images_per_request=args.max_images_per_request,
            url_allow_hosts=frozenset(args.allow_url_host),
        ),
        batching=BatchingConfig(max_batch=args.max_batch, window_ms=args.batch_window_ms, max_queue=args.max_queue),
        request_timeout_s=args.request_timeout,
        visualize=not args.no_visualize,
        jpeg_quality=args.jpeg_quality,
        index_dir=args.index_dir,
        default_index=args.index,
        device=args.device,
        use_hpip=args.use_hpip,
        hpi_config=hpi_config_from_args(args) or None,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    # Intel OpenMP (Paddle Inference's runtime) spins 200 ms after every parallel region by default; a server runs a
    # batch every few tens of ms, so a spinning thread would hold a core that decoding and HTTP need. 1 ms still
    # covers the gaps between the regions of one inference. Set before Paddle starts its OpenMP runtime.
    os.environ.setdefault("KMP_BLOCKTIME", "1")
    try:
        import uvicorn

        from hpi.serving.app import create_app
    except ImportError as exc:
        raise BackendUnavailableError(
            f"hpi serve needs FastAPI and uvicorn ({exc.name} is missing); install them with: pip install 'hpi[serve]'"
        ) from exc
    settings = settings_from_args(args)
    if not _is_loopback(args.host):
        logger.warning("listening on %s: clients other than this machine can reach the server", args.host)
    if args.engine == "ray":
        from hpi.scaleout.ray_serve import serve_forever

        serve_forever(args.pipeline, settings, host=args.host, port=args.port, replicas=args.replicas,
                      cpus_per_replica=args.cpus_per_replica)
        return 0
    app = create_app(args.pipeline, settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                limit_concurrency=args.max_connections, timeout_keep_alive=5, access_log=not args.no_access_log)
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
