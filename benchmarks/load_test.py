"""Load test of ``hpi serve`` against the same model's offline batch throughput, on loopback only.

1. **Offline.** The image_classification pipeline (same model, backend and threads as the server) classifies the test
   image from its file (read, decode, preprocess, infer, top-k) at batch sizes 1..8, a few seconds each, after a
   warm-up, before and again after the served run (the CPU is shared with whatever else runs). The best of these
   is the reference throughput.
2. **Served.** ``python -m hpi.serving`` is started on 127.0.0.1 with the same settings; ``--clients`` keep-alive
   connections each send the seeds' request (``{"image": <Base64 JPEG>}``) in a loop for ``--duration`` seconds
   after ``--warmup`` seconds, or until ``--max-requests``. Every response is checked (HTTP 200, ``errorCode`` 0,
   categories present); anything else counts as an error.

Reported: requests, errors, throughput, latency p50/p90/p99/max, the server's mean batch size, and served /
offline throughput. Results go to ``benchmarks/results/load_test.json`` and ``.md``.

The client is a minimal asyncio HTTP/1.1 client (precomputed request bytes, Content-Length framing), so that the
load generator, which shares the CPU with the server, costs as little as possible.

Example (the figures in the README)::

    python benchmarks/load_test.py --model PP-LCNet_x1_0 --threads 2 --clients 16 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_IMAGE = ROOT / "hpi" / "data" / "images" / "chelsea.jpg"
MAX_DURATION_S = 600.0
MAX_CLIENTS = 256
REQUEST_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------------------------------- offline


def pipeline_yaml(directory: Path, args: argparse.Namespace) -> Path:
    """The image_classification pipeline config both the offline run and the server use."""
    cfg = {"pipeline_name": "image_classification",
           "Pipeline": {"model": args.model, "model_dir": args.model_dir, "device": "cpu", "batch_size": 1}}
    path = directory / "load_test_pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def hpi_config(args: argparse.Namespace) -> dict[str, Any]:
    cfg: dict[str, Any] = {"threads": args.threads}
    if args.backend:
        cfg["backend"] = args.backend
    return cfg


def offline_throughput(config: Path, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Images per second of ``pipeline.predict`` on the test image file at batch sizes 1..8."""
    import hpi

    pipeline = hpi.create_pipeline(str(config), use_hpip=args.use_hpip, hpi_config=hpi_config(args))
    predictor = pipeline.predictor
    engine = {"model": predictor.model_name, "backend": predictor.backend, "precision": predictor.choice.precision,
              "mode": predictor.choice.mode}
    image = str(args.image)
    rows = []
    for batch in range(1, 9):
        inputs = [image] * batch
        for _ in range(3):  # warm-up: engine shapes, thread pools
            list(pipeline.predict(inputs, batch_size=batch))
        done, start, cpu_start = 0, time.perf_counter_ns(), time.process_time()
        while time.perf_counter_ns() - start < args.offline_seconds * 1e9:
            list(pipeline.predict(inputs, batch_size=batch))
            done += batch
        elapsed = (time.perf_counter_ns() - start) / 1e9
        cpu = time.process_time() - cpu_start
        rows.append({"batch_size": batch, "images": done, "seconds": round(elapsed, 3),
                     "images_per_s": round(done / elapsed, 2), "ms_per_batch": round(1000 * elapsed * batch / done, 3),
                     "cpu_ms_per_image": round(1000 * cpu / done, 3)})
        print(f"offline batch {batch}: {done / elapsed:8.1f} img/s", file=sys.stderr)
    pipeline.close()
    return rows, engine


# --------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(config: Path, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "hpi.serving", "--pipeline", str(config), "--host", "127.0.0.1", "--port", str(port),
           "--threads", str(args.threads), "--max-batch", str(args.max_batch), "--batch-window-ms",
           str(args.window_ms), "--log-level", "warning"]
    if args.use_hpip:
        cmd.append("--use-hpip")
    if args.backend:
        cmd += ["--backend", args.backend]
    if args.no_visualize:
        cmd.append("--no-visualize")
    return subprocess.Popen(cmd, cwd=ROOT)


def http_get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} before it was healthy")
        try:
            status, body = http_get_json(port, "/health")
            if status == 200:
                return body["result"]
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not healthy after {timeout:.0f} s")


# --------------------------------------------------------------------------------------------------- load


@dataclass
class LoadStats:
    latencies_ms: list[float] = field(default_factory=list)  # successful requests in the measured window
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0  # requests started in the measured window
    total: int = 0  # requests started, warm-up included

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Budget:
    """How many requests may still start (``--max-requests`` bounds the whole run)."""

    def __init__(self, count: int) -> None:
        self.left = count

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def build_request(port: int, body: bytes) -> bytes:
    head = (f"POST /image-classification HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode("ascii") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def check_body(status: int, body: bytes) -> str | None:
    """None for a correct classification response, else what was wrong."""
    if status != 200:
        return f"http_{status}"
    try:
        data = json.loads(body)
    except ValueError:
        return "bad_json"
    if data.get("errorCode") != 0:
        return f"error_code_{data.get('errorCode')}"
    result = data.get("result") or {}
    if not result.get("categories") or not isinstance(result.get("image"), str | None):
        return "bad_result"
    return None


async def client(port: int, request: bytes, measure_from: float, stop_at: float, budget: Budget,
                 stats: LoadStats) -> None:
    reader = writer = None
    while True:
        now = time.perf_counter()
        if now >= stop_at or not budget.take():
            break
        measured = now >= measure_from
        stats.total += 1
        if measured:
            stats.sent += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            start = time.perf_counter_ns()
            writer.write(request)
            await writer.drain()
            status, headers, body = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
            latency_ms = (time.perf_counter_ns() - start) / 1e6
            problem = check_body(status, body)
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
        except (OSError, ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
            problem = type(exc).__name__
            if writer is not None:
                writer.close()
            reader = writer = None
        if measured:
            if problem is None:
                stats.latencies_ms.append(latency_ms)
            else:
                stats.error(problem)
    if writer is not None:
        writer.close()


async def run_load(port: int, request: bytes, args: argparse.Namespace) -> tuple[LoadStats, float]:
    stats = LoadStats()
    start = time.perf_counter()
    measure_from = start + args.warmup
    stop_at = measure_from + args.duration
    budget = Budget(args.max_requests)
    await asyncio.gather(*(client(port, request, measure_from, stop_at, budget, stats) for _ in range(args.clients)))
    measured_s = max(1e-9, min(time.perf_counter(), stop_at) - measure_from)
    return stats, measured_s


# --------------------------------------------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def conditions(args: argparse.Namespace) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "threads": args.threads, "clients": args.clients, "duration_s": args.duration, "warmup_s": args.warmup,
            "max_requests": args.max_requests, "max_batch": args.max_batch, "window_ms": args.window_ms,
            "use_hpip": args.use_hpip, "visualize": not args.no_visualize, "image": str(args.image),
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}


def markdown(report: dict[str, Any]) -> str:
    c, s, e = report["conditions"], report["served"], report["engine"]
    lines = [
        "# hpi serve load test",
        "",
        f"`{c['command']}`",
        "",
        f"{e['model']} on {e['backend']} ({e['precision']}, {e['mode']} mode), {c['threads']} threads, {c['cpu']} "
        f"({c['cores']} cores, shared with the load generator), {c['clients']} clients for {c['duration_s']:g} s "
        f"after {c['warmup_s']:g} s warm-up, max batch {c['max_batch']}, window {c['window_ms']:g} ms, "
        f"visualisation {'on' if c['visualize'] else 'off'}, image {Path(c['image']).name}.",
        "",
        "| | value |",
        "|---|---|",
        f"| requests | {s['requests']} |",
        f"| errors | {s['errors']} |",
        f"| throughput | {s['throughput_rps']:.1f} req/s |",
        f"| latency p50 / p90 / p99 / max | {s['p50_ms']} / {s['p90_ms']} / {s['p99_ms']} / {s['max_ms']} ms |",
        f"| server mean batch size | {s['mean_batch_size']} |",
        f"| CPU per request (warm-up included): server / load generator | {s['server_cpu_ms_per_request']:.2f} / "
        f"{s['client_cpu_ms_per_request']:.2f} ms |",
        f"| CPU per image offline (batch {report['offline_best']['batch_size']}) | "
        f"{report['offline_best']['cpu_ms_per_image']:.2f} ms |",
        f"| offline best (batch {report['offline_best']['batch_size']}, better of before/after) | "
        f"{report['offline_best']['images_per_s']:.1f} img/s |",
        f"| served / offline | {100 * report['served_over_offline']:.1f}% |",
        "",
        f"1-minute load average of the machine: {c['load_average_at_start'][0]:.2f} at start, "
        f"{c['load_average_during_load'][0]:.2f} / {c['load_average_during_load'][1]:.2f} before / after the "
        "served run.",
        "",
        "| offline batch size | img/s before | img/s after |",
        "|---|---|---|",
        *(f"| {r['batch_size']} | {r['images_per_s']:.1f} | {r['images_per_s_after']:.1f} |"
          for r in report["offline"]),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    load_at_start = os.getloadavg()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="PP-LCNet_x1_0", help="classification model (default: PP-LCNet_x1_0)")
    parser.add_argument("--model-dir", default=None, help="its directory (default: the local store, zoo-built)")
    parser.add_argument("--threads", type=int, default=2, help="inference threads (default: 2)")
    parser.add_argument("--backend", default=None, help="force a backend (default: normal mode, or --use-hpip)")
    parser.add_argument("--use-hpip", action="store_true", help="high-performance mode on both sides")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections (default: 16)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds (default: 60)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (default: 3)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="bound on requests sent (default: 200000)")
    parser.add_argument("--max-batch", type=int, default=8, help="server max batch (default: 8)")
    parser.add_argument("--window-ms", type=float, default=2.0, help="server batching window (default: 2)")
    parser.add_argument("--no-visualize", action="store_true", help="server sends result.image as null")
    parser.add_argument("--offline-seconds", type=float, default=2.0, help="seconds per offline batch size")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the JPEG every request sends")
    parser.add_argument("--out", type=Path, default=RESULTS / "load_test.json", help="JSON report (and .md beside)")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION_S or not 1 <= args.clients <= MAX_CLIENTS or args.max_requests < 1:
        parser.error(f"--duration must be in (0, {MAX_DURATION_S:g}], --clients in [1, {MAX_CLIENTS}], "
                     "--max-requests positive")
    os.environ.setdefault("GLOG_minloglevel", "2")

    with tempfile.TemporaryDirectory(prefix="hpi-load-") as tmp:
        config = pipeline_yaml(Path(tmp), args)
        offline, engine = offline_throughput(config, args)
        load_before = os.getloadavg()
        port = free_port()
        proc = start_server(config, port, args)
        try:
            health = wait_healthy(port, proc, timeout=600)
            body = json.dumps({"image": base64.b64encode(args.image.read_bytes()).decode("ascii")}).encode()
            server_cpu, client_cpu = process_cpu_seconds(proc.pid), time.process_time()
            stats, measured_s = asyncio.run(run_load(port, build_request(port, body), args))
            server_cpu = process_cpu_seconds(proc.pid) - server_cpu
            client_cpu = time.process_time() - client_cpu
            _, after = http_get_json(port, "/health")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        load_after = os.getloadavg()
        # Offline again: the CPU is shared, so the reference is the better of the runs before and after.
        offline_after, _ = offline_throughput(config, args)

    for row, again in zip(offline, offline_after):
        row["images_per_s_after"] = again["images_per_s"]
    best_row = max(offline, key=lambda r: max(r["images_per_s"], r["images_per_s_after"]))
    best = {"batch_size": best_row["batch_size"],
            "images_per_s": max(best_row["images_per_s"], best_row["images_per_s_after"]),
            "cpu_ms_per_image": best_row["cpu_ms_per_image"]}
    ok = len(stats.latencies_ms)
    errors = sum(stats.errors.values())
    served_rps = ok / measured_s
    server_model = health["models"][0]
    report = {
        "conditions": conditions(args) | {"load_average_at_start": [round(x, 2) for x in load_at_start],
                                          "load_average_during_load": [round(load_before[0], 2),
                                                                       round(load_after[0], 2)],
                                          "server_kmp_blocktime": os.environ.get("KMP_BLOCKTIME", "1 (hpi serve)")},
        "engine": engine,
        "server_engine": {k: server_model[k] for k in ("name", "backend", "precision", "mode")},
        "offline": offline,
        "offline_best": best,
        "served": {
            "requests": stats.sent, "ok": ok, "errors": errors, "error_kinds": stats.errors,
            "measured_s": round(measured_s, 3), "throughput_rps": round(served_rps, 2),
            "p50_ms": percentile(stats.latencies_ms, 50), "p90_ms": percentile(stats.latencies_ms, 90),
            "p99_ms": percentile(stats.latencies_ms, 99),
            "max_ms": round(max(stats.latencies_ms), 2) if stats.latencies_ms else None,
            "mean_batch_size": after["result"]["batching"][server_model["name"]]["meanBatchSize"],
            # CPU cost per request, warm-up included: robust to other load on the machine, unlike throughput.
            "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, stats.total), 3),
            "client_cpu_ms_per_request": round(1000 * client_cpu / max(1, stats.total), 3),
        },
        "served_over_offline": round(served_rps / best["images_per_s"], 4),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
