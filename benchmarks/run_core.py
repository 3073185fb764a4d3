"""Regenerate the latency table of the nine core models of seed 002 on this machine.

CPU, batch 1 and 8, 1 and 2 threads (capped at the machine's cores), zoo models (seeded weights, built into the local
model store when missing). Every candidate of every configuration is timed in its own process. Writes
``benchmarks/results/core.{md,json,png}``.

    python benchmarks/run_core.py                      # the full table (about 30-60 minutes on 2 cores)
    python benchmarks/run_core.py --models PP-LCNet_x1_0 --batch-sizes 1 --threads 2 --budget 1   # a quick look
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpi.benchmark import bench_models, format_json, format_markdown, plot
from hpi.cards import core_models
from hpi.cli.common import progress_printer
from hpi.device import Device, cpu_count

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated names (default: the nine core models)")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per candidate")
    parser.add_argument("--name", default="core", help="output file stem in benchmarks/results/")
    args = parser.parse_args(argv)

    models = args.models.split(",") if args.models else [c.name for c in core_models()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    threads = sorted({min(int(t), cpu_count()) for t in args.threads.split(",")})
    progress = progress_printer()
    benches = []
    for bench in bench_models(models, Device("cpu"), batch_sizes=batch_sizes, threads=threads, budget_s=args.budget,
                              progress=progress):
        benches.append(bench)
        RESULTS.mkdir(parents=True, exist_ok=True)  # written after every model: a long run keeps what it measured
        (RESULTS / f"{args.name}.md").write_text(format_markdown(benches), encoding="utf-8")
        (RESULTS / f"{args.name}.json").write_text(format_json(benches), encoding="utf-8")
    plot(benches, RESULTS / f"{args.name}.png")
    progress(f"wrote {RESULTS / args.name}.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
