"""Load test of ``hpi serve`` against the same model's offline batch throughput, on loopback only.

1. **Offline scan.** The image_classification pipeline (same model, backend and threads as the server) classifies the
   test image from its file (read, decode, preprocess, infer, top-k) at batch sizes 1..8, ``--offline-seconds``
   each; the fastest batch size is the offline reference's.
2. **Rounds.** ``python -m hpi.serving`` is started on 127.0.0.1 with the same settings (``--max-batch auto``:
   the server's max batch is the scan's best batch size, both sides then run batches of one size). ``--rounds``
   times: the offline pipeline runs ``--offline-slice-seconds`` at that batch size while the server idles, then ``--clients``
   keep-alive connections each send the seeds' request (``{"image": <Base64 JPEG>}``, plus ``"visualize": false``
   with ``--no-image``) in a loop for ``--duration / --rounds`` seconds (after ``--warmup`` seconds in the first
   round, 1 s in the others). Alternating slices make other work on a shared machine weigh on both sides alike.
   Every response is checked (HTTP 200, ``errorCode`` 0, categories present); anything else counts as an error.

Reported: requests, errors, served and offline throughput and their ratio, latency p50/p90/p99/max, the server's
mean batch size, the share of the time its engine thread was busy, CPU per request of the server (in all, and by
thread: event loop, engine thread, the engine's helper threads) and of the load generator, and the machine's load
average. Results go to ``benchmarks/results/load_test.json`` and ``.md``.
``--workers N`` serves from N processes of ``--threads / N`` engine threads (``hpi serve --workers``); the offline
reference stays one process of ``--threads`` threads, and the same split offline (N processes at once, each
``--offline-slice-seconds`` before and after the served rounds) is reported beside it. Server CPU then counts the
supervisor and every worker, and the engine counters come from ``GET /metrics`` (added up over the workers).
``--profile FILE`` runs the server under py-spy (folded stacks; the throughput of such a run is not a result).

The client is :mod:`hpi.tune.load`, the load generator ``hpi tune`` measures with: a minimal asyncio HTTP/1.1 client
(precomputed request bytes, Content-Length framing), so that it costs the shared CPU as little as possible.

Example (the figures in the README's Serving section)::

    python benchmarks/load_test.py --model PP-LCNet_x1_0 --threads 2 --clients 16 --duration 60 --no-image
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from hpi.tune.load import Budget, LoadStats, build_request, http_get, percentile, run_load

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_IMAGE = ROOT / "hpi" / "data" / "images" / "chelsea.jpg"
MAX_DURATION_S = 600.0
MAX_CLIENTS = 256


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


class OfflineBench:
    """``pipeline.predict`` on the test image file, loaded once: a scan over batch sizes and timed slices."""

    def __init__(self, config: Path, args: argparse.Namespace) -> None:
        import hpi

        self.pipeline = hpi.create_pipeline(str(config), use_hpip=args.use_hpip, hpi_config=hpi_config(args))
        predictor = self.pipeline.predictor
        self.engine = {"model": predictor.model_name, "backend": predictor.backend,
                       "precision": predictor.choice.precision, "mode": predictor.choice.mode}
        self.image = str(args.image)

    def measure(self, batch: int, seconds: float) -> dict[str, Any]:
        """Images, wall seconds and CPU seconds of ``seconds`` of prediction at ``batch`` (after a warm-up)."""
        inputs = [self.image] * batch
        for _ in range(2):  # warm-up: engine shapes, thread pools
            list(self.pipeline.predict(inputs, batch_size=batch))
        done, start, cpu_start = 0, time.perf_counter_ns(), time.process_time()
        main_start = time.thread_time()
        while time.perf_counter_ns() - start < seconds * 1e9:
            list(self.pipeline.predict(inputs, batch_size=batch))
            done += batch
        cpu_s = time.process_time() - cpu_start
        main_s = time.thread_time() - main_start  # the thread calling predict: the server's engine thread's job
        return {"batch_size": batch, "images": done, "seconds": (time.perf_counter_ns() - start) / 1e9,
                "cpu_s": cpu_s, "main_thread_cpu_s": main_s}

    def scan(self, seconds: float) -> list[dict[str, Any]]:
        """Throughput at batch sizes 1..8, ``seconds`` each."""
        rows = []
        for batch in range(1, 9):
            m = self.measure(batch, seconds)
            rows.append({"batch_size": batch, "images": m["images"], "seconds": round(m["seconds"], 3),
                         "images_per_s": round(m["images"] / m["seconds"], 2),
                         "cpu_ms_per_image": round(1000 * m["cpu_s"] / m["images"], 3)})
            print(f"offline batch {batch}: {rows[-1]['images_per_s']:8.1f} img/s", file=sys.stderr)
        return rows

    def close(self) -> None:
        self.pipeline.close()


def offline_processes(config: Path, args: argparse.Namespace, batch: int, seconds: float) -> dict[str, Any]:
    """Offline throughput of ``--workers`` processes at once, each with ``--threads / --workers`` threads: the offline
    counterpart of ``hpi serve --workers`` (the processes start together once every one has loaded its engine)."""
    spec = {"config": str(config), "threads": max(1, args.threads // args.workers), "backend": args.backend,
            "use_hpip": args.use_hpip, "image": str(args.image), "batch": batch, "seconds": seconds}
    procs = [subprocess.Popen([sys.executable, __file__, "--offline-child", json.dumps(spec)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(args.workers)]
    try:
        for proc in procs:  # each says "ready" once loaded and warm; then all are told to go at once
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("an offline process failed to start")
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [json.loads(proc.communicate(timeout=seconds + 120)[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return {"processes": args.workers, "threads_each": spec["threads"], "batch_size": batch,
            "images_per_s": round(sum(r["images"] / r["seconds"] for r in results), 2)}


def offline_child(spec_json: str) -> int:
    """One process of :func:`offline_processes`."""
    spec = json.loads(spec_json)
    ns = argparse.Namespace(threads=spec["threads"], backend=spec["backend"], use_hpip=spec["use_hpip"],
                            image=spec["image"])
    bench = OfflineBench(Path(spec["config"]), ns)
    bench.measure(spec["batch"], 0.5)
    print("ready", flush=True)
    sys.stdin.readline()
    m = bench.measure(spec["batch"], spec["seconds"])
    bench.close()
    print(json.dumps({"images": m["images"], "seconds": m["seconds"]}), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------- server


def max_batch_arg(value: str) -> int | str:
    """``--max-batch``: a positive integer, or ``auto``."""
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}")
    return int(value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(config: Path, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "hpi.serving", "--pipeline", str(config), "--host", "127.0.0.1", "--port", str(port),
           "--threads", str(max(1, args.threads // args.workers)), "--workers", str(args.workers), "--max-batch",
           str(args.max_batch), "--batch-window-ms", str(args.window_ms), "--log-level", "warning"]
    if args.use_hpip:
        cmd.append("--use-hpip")
    if args.backend:
        cmd += ["--backend", args.backend]
    if args.no_visualize:
        cmd.append("--no-visualize")
    if args.loop_niceness is not None:
        cmd += ["--loop-niceness", str(args.loop_niceness)]
    if args.profile:  # py-spy samples the server's Python stacks (folded, one line per stack) while it runs
        cmd = ["py-spy", "record", "--rate", "200", "--format", "raw", "--threads", "--output", str(args.profile),
               "--", *cmd]
    env = dict(os.environ)
    if args.server_kmp_blocktime is not None:  # the server's Intel OpenMP spin time, the offline side's unchanged
        env["KMP_BLOCKTIME"] = args.server_kmp_blocktime
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


ENGINE_COUNTERS = {"hpi_engine_busy_seconds_total": "busy_s", "hpi_batches_total": "batches",
                   "hpi_batch_items_total": "items"}


def engine_counters(port: int) -> dict[str, float]:
    """The server's engine busy seconds, batches and batched items, added up over its workers (``GET /metrics``)."""
    out = dict.fromkeys(ENGINE_COUNTERS.values(), 0.0)
    for line in http_get(port, "/metrics")[1].decode().splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in ENGINE_COUNTERS:
            out[ENGINE_COUNTERS[name]] += float(line.rsplit(" ", 1)[1])
    return out


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``hpi serve --workers``: the supervisor and its worker processes)."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            tasks = os.listdir(f"/proc/{pids[i]}/task")
        except OSError:
            tasks = []
        for tid in tasks:
            with contextlib.suppress(OSError):
                pids += [int(c) for c in Path(f"/proc/{pids[i]}/task/{tid}/children").read_text().split()]
        i += 1
    return pids


def tree_cpu_seconds(pids: list[int]) -> float:
    return sum(process_cpu_seconds(p) for p in pids)


THREAD_GROUPS = ("event loop", "engine thread", "other threads")


def tree_thread_cpu_seconds(pids: list[int]) -> dict[str, float]:
    """:func:`thread_cpu_seconds` added up over processes (the workers of ``hpi serve --workers``)."""
    out = dict.fromkeys(THREAD_GROUPS, 0.0)
    for pid in pids:
        for group, seconds in thread_cpu_seconds(pid).items():
            out[group] += seconds
    return out


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of a server's threads in :data:`THREAD_GROUPS` (Linux ``/proc``; empty elsewhere).

    The main thread runs the event loop (HTTP, JSON, Base64, metrics). The engine thread names itself
    ``hpi-engine``; the threads it starts (OpenMP, preprocessing) inherit that name and come after it, so the
    lowest thread id of that name is the engine thread and the others, with anything else, are "other threads".
    """
    seconds: dict[int, tuple[str, float]] = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return {}
    for tid in tids:
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        seconds[tid] = comm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    engine = min((tid for tid, (comm, _) in seconds.items() if comm.startswith("hpi-engine")), default=None)
    out = dict.fromkeys(THREAD_GROUPS, 0.0)
    for tid, (_, cpu) in seconds.items():
        out["event loop" if tid == pid else "engine thread" if tid == engine else "other threads"] += cpu
    return out


def server_pid(proc: subprocess.Popen[bytes], profiled: bool) -> int:
    """The server's process id: ``proc`` itself, or py-spy's child when the server runs under py-spy."""
    if not profiled:
        return proc.pid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise SystemExit("py-spy did not start the server")


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} before it was healthy")
        try:
            status, body = http_get(port, "/health")
            if status == 200:
                return json.loads(body)["result"]
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not healthy after {timeout:.0f} s")


# --------------------------------------------------------------------------------------------------- report


def conditions(args: argparse.Namespace) -> dict[str, Any]:
    from hpi.cpu import cpu_info

    return {"cpu": cpu_info()["model"], "cores": os.cpu_count(), "python": platform.python_version(),
            "threads": args.threads, "workers": args.workers, "clients": args.clients, "duration_s": args.duration, "warmup_s": args.warmup,
            "max_requests": args.max_requests, "max_batch": args.max_batch,
            "max_batch_from": getattr(args, "max_batch_from", "given"), "window_ms": args.window_ms,
            "rounds": args.rounds, "offline_slice_seconds": args.offline_slice_seconds,
            "use_hpip": args.use_hpip, "visualize": not (args.no_visualize or args.no_image),
            "image": str(args.image),
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}


def markdown(report: dict[str, Any]) -> str:
    c, s, e, o = report["conditions"], report["served"], report["engine"], report["offline"]
    lines = [
        "# hpi serve load test",
        "",
        f"`{c['command']}`",
        "",
        f"{e['model']} on {e['backend']} ({e['precision']}, {e['mode']} mode), {c['threads']} threads"
        + (f" (server: {c['workers']} worker processes of {max(1, c['threads'] // c['workers'])})"
           if c.get("workers", 1) > 1 else "") + f", {c['cpu']} "
        f"({c['cores']} cores, shared with the load generator and with other work: see the load average), "
        f"{c['clients']} clients, {c['duration_s']:g} s measured in {c['rounds']} slices, each after "
        f"{c['offline_slice_seconds']:g} s of offline prediction at batch {o['batch_size']}; max batch "
        f"{c['max_batch']} ({c.get('max_batch_from', 'given')}), window {c['window_ms']:g} ms, visualisation {'on' if c['visualize'] else 'off'}, image "
        f"{Path(c['image']).name}.",
        "",
        "| | value |",
        "|---|---|",
        f"| requests | {s['requests']} |",
        f"| errors | {s['errors']} |",
        f"| served throughput | {s['throughput_rps']:.1f} req/s |",
        f"| offline throughput, interleaved slices (batch {o['batch_size']}) | {o['images_per_s']:.1f} img/s |",
        f"| **served / offline** | **{100 * report['served_over_offline']:.1f}%** |",
        f"| served / best of the offline scan before the load | {100 * report['served_over_best_scan']:.1f}% |",
        *([f"| offline throughput of the server's split ({sp[0]['processes']} processes x {sp[0]['threads_each']} "
           f"threads at once, batch {sp[0]['batch_size']}; before / after the load) | "
           + " / ".join(f"{m['images_per_s']:.1f}" for m in sp) + " img/s |",
           f"| served / offline of the same split | {100 * report['served_over_offline_split']:.1f}% |"]
          if (sp := report.get("offline_split")) else []),
        f"| offline CPU per image / server CPU per request | {100 * report['cpu_efficiency_ratio']:.1f}% |",
        f"| latency p50 / p90 / p99 / max | {s['p50_ms']} / {s['p90_ms']} / {s['p99_ms']} / {s['max_ms']} ms |",
        f"| server mean batch size | {s['mean_batch_size']} |",
        f"| engine thread busy (share of the load phases) | {100 * s['engine_busy_share']:.0f}% |",
        f"| CPU per request: server / load generator | {s['server_cpu_ms_per_request']:.2f} / "
        f"{s['client_cpu_ms_per_request']:.2f} ms |",
        "| server CPU per request by thread: " + ", ".join(s["server_cpu_ms_per_request_by_thread"]) + " | "
        + " / ".join(f"{v:.2f}" for v in s["server_cpu_ms_per_request_by_thread"].values()) + " ms |",
        f"| load generator CPU (share of one core during the load) | {100 * s['client_cpu_share_of_one_core']:.1f}% |",
        f"| CPU per image offline | {o['cpu_ms_per_image']:.2f} ms |",
        *([f"| offline CPU per image by thread: the thread calling predict (the engine thread's job), other threads "
           f"| {o['main_thread_cpu_ms_per_image']:.2f} / {o['cpu_ms_per_image'] - o['main_thread_cpu_ms_per_image']:.2f}"
           " ms |"] if "main_thread_cpu_ms_per_image" in o else []),
        "",
        f"1-minute load average of the machine: {c['load_average_at_start'][0]:.2f} at start, "
        f"{c['load_average_during_load'][0]:.2f} / {c['load_average_during_load'][1]:.2f} before / after the "
        "served run. Offline slices (img/s): " + ", ".join(f"{v:.1f}" for v in o["slices_images_per_s"]) + ".",
        "",
        "| offline scan: batch size | img/s |",
        "|---|---|",
        *(f"| {r['batch_size']} | {r['images_per_s']:.1f} |" for r in report["offline_scan"]),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--offline-child"]:
        return offline_child(argv[1])
    load_at_start = os.getloadavg()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="PP-LCNet_x1_0", help="classification model (default: PP-LCNet_x1_0)")
    parser.add_argument("--model-dir", default=None, help="its directory (default: the local store, zoo-built)")
    parser.add_argument("--threads", type=int, default=2, help="inference threads (default: 2)")
    parser.add_argument("--backend", default=None, help="force a backend (default: normal mode, or --use-hpip)")
    parser.add_argument("--use-hpip", action="store_true", help="high-performance mode on both sides")
    parser.add_argument("--workers", type=int, default=1,
                        help="hpi serve --workers: server processes, each with --threads / --workers engine threads; "
                             "the offline reference stays one process of --threads threads, and the same split "
                             "offline (that many processes at once) is measured too (default: 1)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections (default: 16)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds (default: 60)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (default: 3)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="bound on requests sent (default: 200000)")
    parser.add_argument("--max-batch", type=max_batch_arg, default=8,
                        help="server max batch (default: 8), or 'auto': the batch size the offline scan found "
                             "fastest, so that both sides run the same batch size")
    parser.add_argument("--server-kmp-blocktime", default=None,
                        help="KMP_BLOCKTIME (ms) for the server only (default: as the offline side, 1)")
    parser.add_argument("--window-ms", type=float, default=2.0, help="server batching window (default: 2)")
    parser.add_argument("--no-visualize", action="store_true", help="server sends result.image as null")
    parser.add_argument("--loop-niceness", type=int, default=None,
                        help="the server's --loop-niceness (default: the server's default)")
    parser.add_argument("--no-image", action="store_true",
                        help='requests carry "visualize": false (the client does not ask for result.image)')
    parser.add_argument("--offline-seconds", type=float, default=1.0,
                        help="seconds per batch size of the offline scan that picks the batch size (default: 1)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="offline and served slices alternate this many times (default: 6)")
    parser.add_argument("--offline-slice-seconds", type=float, default=5.0,
                        help="seconds of offline prediction before each served slice (default: 5)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the JPEG every request sends")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run the server under py-spy and write its folded stacks here (costs CPU: the "
                             "throughput of a profiled run is not a result)")
    parser.add_argument("--out", type=Path, default=RESULTS / "load_test.json", help="JSON report (and .md beside)")
    args = parser.parse_args(argv)
    if (not 0 < args.duration <= MAX_DURATION_S or not 1 <= args.clients <= MAX_CLIENTS or args.max_requests < 1
            or not 1 <= args.rounds <= 60 or not 0 < args.offline_slice_seconds <= 60 or not 1 <= args.workers <= 64):
        parser.error(f"--duration must be in (0, {MAX_DURATION_S:g}], --clients in [1, {MAX_CLIENTS}], "
                     "--max-requests positive, --rounds in [1, 60], --offline-slice-seconds in (0, 60], "
                     "--workers in [1, 64]")
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("KMP_BLOCKTIME", "1")  # as hpi serve sets it: both sides run OpenMP alike

    with tempfile.TemporaryDirectory(prefix="hpi-load-") as tmp:
        config = pipeline_yaml(Path(tmp), args)
        bench = OfflineBench(config, args)
        scan = bench.scan(args.offline_seconds)
        batch = max(scan, key=lambda r: r["images_per_s"])["batch_size"]
        args.max_batch_from = "the offline scan's best" if args.max_batch == "auto" else "given"
        args.max_batch = batch if args.max_batch == "auto" else args.max_batch
        load_before = os.getloadavg()
        port = free_port()
        proc = start_server(config, port, args)
        offline_slices, stats, measured_s, load_s = [], LoadStats(), 0.0, 0.0
        server_cpu = client_cpu = 0.0
        thread_cpu = dict.fromkeys(THREAD_GROUPS, 0.0)
        try:
            health = wait_healthy(port, proc, timeout=600)
            payload: dict[str, Any] = {"image": base64.b64encode(args.image.read_bytes()).decode("ascii")}
            if args.no_image:
                payload["visualize"] = False
            request = build_request(port, json.dumps(payload).encode())
            pids = process_tree(server_pid(proc, args.profile is not None))
            split = [offline_processes(config, args, batch, args.offline_slice_seconds)] if args.workers > 1 else []
            before = engine_counters(port)
            budget = Budget(args.max_requests)
            # Rounds: offline at the scan's best batch size while the server idles, then the served load. The other
            # processes on a shared machine then weigh on both sides alike, which a reference measured only before
            # or after the served minute does not ensure.
            for round_ in range(args.rounds):
                offline_slices.append(bench.measure(batch, args.offline_slice_seconds))
                warmup = args.warmup if round_ == 0 else min(args.warmup, 1.0)
                cpu0, ccpu0, t0 = tree_cpu_seconds(pids), time.process_time(), time.perf_counter()
                threads0 = tree_thread_cpu_seconds(pids)
                part, part_s = asyncio.run(run_load(port, request, args.clients, warmup, args.duration / args.rounds,
                                                    budget))
                server_cpu += tree_cpu_seconds(pids) - cpu0
                for group, seconds in tree_thread_cpu_seconds(pids).items():
                    thread_cpu[group] += seconds - threads0.get(group, 0.0)
                client_cpu += time.process_time() - ccpu0
                load_s += time.perf_counter() - t0
                stats.merge(part)
                measured_s += part_s
                print(f"round {round_ + 1}: offline {offline_slices[-1]['images'] / offline_slices[-1]['seconds']:.1f}"
                      f" img/s, served {len(part.latencies_ms) / part_s:.1f} req/s", file=sys.stderr)
            after = engine_counters(port)
            if args.workers > 1:
                split.append(offline_processes(config, args, batch, args.offline_slice_seconds))
        finally:
            if args.profile is not None:  # end the server; py-spy then writes its profile and exits
                os.kill(server_pid(proc, True), signal.SIGTERM)
            else:
                proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            bench.close()
        load_after = os.getloadavg()

    images = sum(m["images"] for m in offline_slices)
    offline_s = sum(m["seconds"] for m in offline_slices)
    offline = {"batch_size": batch, "images": images, "seconds": round(offline_s, 3),
               "images_per_s": round(images / offline_s, 2),
               "cpu_ms_per_image": round(1000 * sum(m["cpu_s"] for m in offline_slices) / images, 3),
               "main_thread_cpu_ms_per_image": round(
                   1000 * sum(m["main_thread_cpu_s"] for m in offline_slices) / images, 3),
               "slices_images_per_s": [round(m["images"] / m["seconds"], 1) for m in offline_slices]}
    best_scan = max(r["images_per_s"] for r in scan)
    ok = len(stats.latencies_ms)
    errors = sum(stats.errors.values())
    served_rps = ok / measured_s
    server_model = health["models"][0]
    busy_s = after["busy_s"] - before["busy_s"]
    batches = after["batches"] - before["batches"]
    report = {
        "conditions": conditions(args) | {"load_average_at_start": [round(x, 2) for x in load_at_start],
                                          "load_average_during_load": [round(load_before[0], 2),
                                                                       round(load_after[0], 2)],
                                          "kmp_blocktime": os.environ.get("KMP_BLOCKTIME"),
                                          "server_kmp_blocktime": args.server_kmp_blocktime
                                          or os.environ.get("KMP_BLOCKTIME"),
                                          "loop_niceness": args.loop_niceness},
        "engine": bench.engine,
        "server_engine": {k: server_model[k] for k in ("name", "backend", "precision", "mode")},
        "offline_scan": scan,
        "offline": offline,
        "served": {
            "requests": stats.sent, "ok": ok, "errors": errors, "error_kinds": stats.errors,
            "measured_s": round(measured_s, 3), "throughput_rps": round(served_rps, 2),
            "p50_ms": percentile(stats.latencies_ms, 50), "p90_ms": percentile(stats.latencies_ms, 90),
            "p99_ms": percentile(stats.latencies_ms, 99),
            "max_ms": round(max(stats.latencies_ms), 2) if stats.latencies_ms else None,
            "mean_batch_size": round((after["items"] - before["items"]) / max(1.0, batches), 2),
            # share of the load phases (warm-ups included) the engine thread spent running batches: near 1, the
            # engine is the bottleneck; well below 1, requests do not reach it fast enough
            "engine_busy_share": round(busy_s / max(1e-9, load_s * args.workers), 3),
            # CPU cost per request, warm-ups included: robust to other load on the machine, unlike throughput.
            "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, stats.total), 3),
            # the same, by thread (threads that ended during a slice are missing from it)
            "server_cpu_ms_per_request_by_thread": {group: round(1000 * seconds / max(1, stats.total), 3)
                                                    for group, seconds in thread_cpu.items()},
            "client_cpu_ms_per_request": round(1000 * client_cpu / max(1, stats.total), 3),
            "client_cpu_share_of_one_core": round(client_cpu / max(1e-9, load_s), 3),
        },
        "served_over_offline": round(served_rps / offline["images_per_s"], 4),
        **({"offline_split": split,
            "served_over_offline_split": round(
                served_rps / (sum(m["images_per_s"] for m in split) / len(split)), 4)} if split else {}),
        "served_over_best_scan": round(served_rps / best_scan, 4),
        # requests per server CPU-second over images per offline CPU-second: what the ratio would be if both sides
        # had the machine's CPU to themselves (the scheduler shares a busy machine per thread, not per process)
        "cpu_efficiency_ratio": round(offline["cpu_ms_per_image"] / max(1e-9, 1000 * server_cpu / max(1, stats.total)),
                                      4),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
