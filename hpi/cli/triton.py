"""``hpi triton``: try an exported repository locally, load-test it, verify it (:mod:`hpi.scaleout.triton`).

* ``hpi triton serve REPO``: the ``nvidia-pytriton`` wheel's ``tritonserver`` on the repository, from its own
  virtual environment (created on first use with the repository's ``requirements.txt``), until Ctrl-C.
* ``hpi triton load --url HOST:PORT --model NAME``: requests per second and latency percentiles from Triton's HTTP
  client library.
* ``hpi triton verify REPO``: every file against the repository's manifest.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from hpi.cli.common import add_command, progress_printer


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi triton`` and its subcommands to the main parser's subcommands."""
    parser = add_command(subparsers, "triton", lambda _p: None, None,
                         help="run an exported Triton repository locally, load-test it, verify it")
    sub = parser.add_subparsers(dest="triton_command", required=True)
    add_command(sub, "serve", _serve_arguments, run_serve,
                help="serve a repository on nvidia-pytriton's tritonserver (Python backend only) for a local trial")
    add_command(sub, "load", _load_arguments, run_load,
                help="load-test a served repository with Triton's HTTP client; prints throughput and latency")
    add_command(sub, "verify", lambda p: p.add_argument("repository"), run_verify,
                help="check every file of a repository against its manifest")
    return parser


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repository", help="a repository written by hpi export --format triton")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000, Triton's)")
    parser.add_argument("--venv", help="the server's virtual environment (default: $HPI_TRITON_VENV, else one in "
                                       "hpi's cache directory); created on first use")
    parser.add_argument("--steps", action="store_true",
                        help="print the steps this command takes, as shell commands, and exit")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for readiness")


def _load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="127.0.0.1:8000", help="the server's HTTP HOST:PORT (default: %(default)s)")
    parser.add_argument("--model", required=True,
                        help="the entry model: NAME_ensemble (hpi layout) or image-classification (paddlex layout)")
    parser.add_argument("--images", help="a directory of JPEG/PNG images to send (default: hpi's built-in photos)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default: 4)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (default: 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default: 2)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _steps(repository: Path, venv: Path, port: int, host: str) -> str:
    from hpi.scaleout.triton.environment import PYVER, SERVER_REQUIREMENTS

    reqs = " ".join(f"'{r}'" for r in SERVER_REQUIREMENTS)
    site = f"{venv}/lib/python{PYVER}/site-packages"
    return "\n".join([
        f"python{PYVER} -m venv {venv}",
        f"{venv}/bin/pip install {reqs} -r {repository}/requirements.txt",
        "mkdir -p /tmp/hpi-triton && cp -r " + f"{site}/pytriton/tritonserver/backends /tmp/hpi-triton/",
        f"cp {site}/pytriton/tritonserver/python_backend_stubs/{PYVER}/triton_python_backend_stub "
        "/tmp/hpi-triton/backends/python/",
        f"PATH={venv}/bin:$PATH LD_LIBRARY_PATH={site}/nvidia_pytriton.libs:$(python{PYVER} -c "
        "'import sysconfig; print(sysconfig.get_config_var(\"LIBDIR\"))') "
        f"{site}/pytriton/tritonserver/bin/tritonserver --model-repository={repository} "
        f"--backend-directory=/tmp/hpi-triton/backends --http-address={host} --http-port={port} "
        "--allow-grpc=false --allow-metrics=false",
    ])


def run_serve(args: argparse.Namespace) -> int:
    """Prepare the environment, start the server, print where it listens, and wait for Ctrl-C or SIGTERM."""
    from hpi.errors import InvalidConfigError
    from hpi.scaleout.triton import MANIFEST_FILE, TritonServer
    from hpi.scaleout.triton.environment import (
        REQUIREMENTS_FILE,
        default_venv,
        server_environment,
        unsupported_reason,
    )

    repo = Path(args.repository).expanduser().resolve()
    venv = Path(args.venv).expanduser().resolve() if args.venv else default_venv()
    if not (repo / MANIFEST_FILE).is_file() or not (repo / REQUIREMENTS_FILE).is_file():
        raise InvalidConfigError(f"{repo} is not a repository written by hpi export --format triton (no "
                                 f"{MANIFEST_FILE} or {REQUIREMENTS_FILE})")
    manifest = json.loads((repo / MANIFEST_FILE).read_text(encoding="utf-8"))
    plan = manifest.get("plan", {})
    if plan.get("backend") not in ("python", None) and manifest.get("layout") != "paddlex":
        raise InvalidConfigError(
            f"{repo}'s engine uses Triton's {plan.get('backend')} backend, which nvidia-pytriton's server lacks; "
            "export with --engine-backend python for a local trial, or run this repository on NVIDIA's Triton "
            "container (see its README.md)")
    if args.steps:
        print(_steps(repo, venv, args.port, args.host))
        return 0
    reason = unsupported_reason()
    if reason:
        print(f"hpi: error: {reason}\nOn a Linux x86-64 machine with libpython, these steps start the server:\n"
              + _steps(repo, venv, args.port, args.host), file=sys.stderr)
        return 2
    show = progress_printer()
    show(f"server environment {venv} (created on first use: several minutes)")
    server_environment(repo / REQUIREMENTS_FILE, venv, progress=show)
    show("starting tritonserver")
    try:
        log = sys.stdout.buffer if sys.stdout.fileno() >= 0 else None
    except (AttributeError, OSError, ValueError):  # no real file behind stdout (captured)
        log = None
    sys.stdout.flush()

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    server = TritonServer(venv, repo, host=args.host, port=args.port, start_timeout_s=args.start_timeout, log=log)
    try:
        with server:
            print(f"Triton serving {repo} at http://{server.url} (models: {', '.join(manifest['models'])}; clients "
                  f"call {manifest['entry_model']}); Ctrl-C stops it", flush=True)
            print(f"load test: python -m hpi triton load --url {server.url} --model {manifest['entry_model']}",
                  flush=True)
            return server.wait()
    except KeyboardInterrupt:
        return 0


def run_load(args: argparse.Namespace) -> int:
    """Run the load test and print requests per second and latency percentiles; exit 1 if any request failed."""
    from hpi.errors import InvalidConfigError
    from hpi.scaleout.triton import run_load_test

    if args.images:
        folder = Path(args.images)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")) \
            if folder.is_dir() else []
        if not files:
            raise InvalidConfigError(f"--images {folder}: expected a directory with JPEG/PNG/BMP images")
    else:
        from hpi.selection.measure import SAMPLE_IMAGES

        files = sorted(SAMPLE_IMAGES.glob("*.jpg"))
    result = run_load_test(args.url, args.model, [p.read_bytes() for p in files], concurrency=args.concurrency,
                           duration_s=args.duration, warmup_s=args.warmup)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"{args.model} at {args.url}, concurrency {result.concurrency}, {result.seconds:g} s: "
              f"{result.requests} requests, {result.throughput:.1f} images/s, latency p50 {result.p50_ms:.1f} ms, "
              f"p90 {result.p90_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, {result.errors} errors")
        if result.first_error:
            print(f"first error: {result.first_error}")
    return 1 if result.errors or not result.requests else 0


def run_verify(args: argparse.Namespace) -> int:
    """Print each problem; exit 1 when there is one."""
    from hpi.scaleout.triton import verify_repository

    problems = verify_repository(args.repository)
    for problem in problems:
        print(problem)
    print(f"{args.repository}: {'intact' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0
