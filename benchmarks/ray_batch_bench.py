"""Ray Data batch throughput (``hpi batch``'s job) over 1 and 2 workers against ``predict()`` in one process.

The same image files go through each configuration: the built-in photos, copied ``--copies`` times. Reported per
run: images/s over the whole job (wall clock), and CPU per image (user + system time of every process involved
divided by the images). For ``predict()`` that is this process; for Ray it is every process the local cluster runs
(driver, GCS, raylet, Ray Data's actors and the workers), sampled from /proc every 0.1 s, so Ray's own overhead
counts. A Ray job's time includes starting its actors and loading the model in each; the cluster itself is
started once before the runs (not timed). The machine may be shared: its load average is recorded before and
after.

Example (the figure in the README's Scale out section)::

    python benchmarks/ray_batch_bench.py --model PP-LCNet_x1_0 --copies 128 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hpi  # noqa: E402
from hpi.selection.measure import SAMPLE_IMAGES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


class TreeCpu:
    """CPU seconds used by this process and its descendants between start() and stop(), including processes that
    exit in between (their last sample counts)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.last: dict[int, float] = {}
        self.base: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> dict[int, float]:
        pids = _descendants(os.getpid()) | {os.getpid()}
        return {pid: cpu for pid in pids if (cpu := _cpu_seconds(pid)) is not None}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.last.update(self._sample())

    def start(self) -> TreeCpu:
        self.base = self._sample()
        self.last = dict(self.base)
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.last.update(self._sample())
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.last.items())


def image_set(directory: Path, copies: int) -> list[Path]:
    files = []
    for k in range(copies):
        for src in sorted(SAMPLE_IMAGES.glob("*.jpg")):
            dst = directory / f"{k:04d}_{src.name}"
            shutil.copy(src, dst)
            files.append(dst)
    return files


def run_predict(model_name: str, model_dir: Path, files: list[Path], threads: int, batch_size: int,
                cache: Path) -> dict[str, Any]:
    cpu0, t0 = os.times(), time.perf_counter()
    with hpi.create_model(model_name, str(model_dir), device="cpu", hpi_config={"threads": threads},
                          cache_dir=cache) as model:
        n = sum(1 for _ in model.predict([str(f) for f in files], batch_size=batch_size))
    wall, cpu1 = time.perf_counter() - t0, os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"config": f"predict() in one process, {threads} threads", "workers": 0, "threads": threads,
            "images": n, "seconds": wall, "images_per_s": n / wall, "cpu_ms_per_image": 1e3 * cpu / n}


def run_ray(model_name: str, model_dir: Path, files: list[Path], workers: int, batch_size: int, cache: Path,
            out: Path) -> dict[str, Any]:
    from hpi.scaleout.ray_batch import run_batch

    meter = TreeCpu().start()
    report = run_batch(model_name, str(files[0].parent), out, model_dir=str(model_dir), workers=workers,
                       batch_size=batch_size, cache_dir=str(cache))
    cpu = meter.stop()
    if report.rows != len(files) or report.failed:
        raise RuntimeError(f"ray job wrote {report.rows} rows, {report.failed} failed; expected {len(files)}")
    return {"config": f"Ray Data, {workers} worker(s) x {report.threads_per_worker} thread(s)", "workers": workers,
            "threads": report.threads_per_worker, "images": report.rows, "seconds": report.seconds,
            "images_per_s": report.rows / report.seconds, "cpu_ms_per_image": 1e3 * cpu / report.rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="PP-LCNet_x1_0")
    parser.add_argument("--copies", type=int, default=128, help="copies of the 4 built-in photos (default: 512)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration; the best is reported")
    parser.add_argument("--output", default=str(RESULTS / "ray_batch"))
    args = parser.parse_args(argv)

    from hpi import zoo
    from hpi.cpu import cpu_count
    from hpi.scaleout.ray_cluster import connect, disconnect

    cores = cpu_count()
    work = Path(tempfile.mkdtemp(prefix="hpi-ray-bench-"))
    try:
        model_dir = zoo.build(args.model, work / "model")
        images = work / "images"
        images.mkdir()
        files = image_set(images, args.copies)
        cache = work / "cache"
        load_before = os.getloadavg()
        runs: list[dict[str, Any]] = []
        connection = connect(num_cpus=cores, object_store_bytes=200 << 20)
        try:
            for r in range(args.repeats):
                runs.append({**run_predict(args.model, model_dir, files, cores, args.batch_size, cache), "round": r})
                for workers in (1, 2):
                    runs.append({**run_ray(args.model, model_dir, files, workers, args.batch_size, cache,
                                           work / f"out{workers}.parquet"), "round": r})
                print(f"round {r}: " + "; ".join(f"{x['config']}: {x['images_per_s']:.1f} img/s"
                                                 for x in runs if x["round"] == r), file=sys.stderr)
        finally:
            disconnect(connection)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run["config"] not in best or run["images_per_s"] > best[run["config"]]["images_per_s"]:
            best[run["config"]] = run
    import ray

    result = {
        "model": args.model, "weights": "seeded", "mode": "normal (Paddle Inference fp32)",
        "images": len(files), "batch_size": args.batch_size, "repeats": args.repeats,
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores available, {platform.system()}, "
                   f"Python {platform.python_version()}, Ray {ray.__version__}",
        "load_average_before": load_before, "load_average_after": load_after,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "best": list(best.values()), "runs": runs,
        "median_images_per_s": {c: statistics.median(x["images_per_s"] for x in runs if x["config"] == c)
                                for c in best},
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    out.with_suffix(".md").write_text(to_markdown(result), encoding="utf-8")
    print(to_markdown(result))
    return 0


def to_markdown(result: dict[str, Any]) -> str:
    base = next(x for x in result["best"] if x["workers"] == 0)
    lines = [
        f"# Ray Data batch throughput: {result['model']} (weights: {result['weights']}, {result['mode']})",
        "",
        f"{result['images']} images (the 4 built-in photos, copied), batch {result['batch_size']}, best of "
        f"{result['repeats']} run(s); {result['machine']}; {result['date']}. Load average (1/5/15 min) before "
        f"{'/'.join(f'{v:.2f}' for v in result['load_average_before'])}, after "
        f"{'/'.join(f'{v:.2f}' for v in result['load_average_after'])}: the machine was shared with other jobs.",
        "",
        "| configuration | images/s (whole job) | vs predict() | CPU ms per image | job seconds |",
        "|---|---|---|---|---|",
    ]
    for x in result["best"]:
        lines.append(f"| {x['config']} | {x['images_per_s']:.1f} | {x['images_per_s'] / base['images_per_s']:.2f}x "
                     f"| {x['cpu_ms_per_image']:.2f} | {x['seconds']:.2f} |")
    lines += ["", "predict() includes loading the model (under a second); a Ray job's seconds include starting its "
                  "actors and loading the model in each (Paddle's import alone is seconds per actor). CPU per image for Ray counts every process "
                  "of the local cluster (driver, GCS, raylet, Ray Data's actors, the workers)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
