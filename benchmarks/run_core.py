"""Regenerate the latency table of the nine core models of seed 002 for the kind of CPU this machine has.

CPU, batch 1 and 8, 1 and 2 threads (capped at the machine's cores), zoo models (seeded weights, built into the local
model store when missing). Every candidate of every configuration is timed in its own process. Writes
``benchmarks/results/core-<cpu kind>.{md,json,png}`` (e.g. ``core-intel-xeon-amx``, ``core-amd-epyc-avx2``): one
table per kind of CPU, its header naming the CPU, its flags, the date, the weights, the load and the measured
compute and memory roofs; the targets of that kind are checked, and a miss names the bound in its way.

    python benchmarks/run_core.py                      # the full table (about 30-60 minutes on 2 cores)
    python benchmarks/run_core.py --models PP-LCNet_x1_0 --batch-sizes 1 --threads 2 --merge   # one model into it

``--op-profile`` then appends, for every model that missed its target with an OpenVINO winner, where that engine's
time goes op by op against the same roofs (``benchmarks/op_profile.py``): the per-op form of the bound in its way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from hpi.bench import bench_models, format_json, format_markdown, load_benches, plot
from hpi.bench.report import summary_rows, target_checks
from hpi.bench.targets import cpu_kind, measure_peaks
from hpi.cards import core_models
from hpi.cli.common import progress_printer
from hpi.cpu import cpu_count
from hpi.device import Device

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parent))  # op_profile.py, beside this script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated names (default: the nine core models)")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per candidate")
    parser.add_argument("--name", help="output file stem in benchmarks/results/ (default: core-<this CPU's kind>)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other models of an existing table of the same name (one model per command)")
    parser.add_argument("--op-profile", action="store_true",
                        help="append an OpenVINO op profile of every missed target's winner (benchmarks/op_profile.py)")
    args = parser.parse_args(argv)

    kind = cpu_kind()
    name = args.name or f"core-{kind.stem}"
    models = args.models.split(",") if args.models else [c.name for c in core_models()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    threads = sorted({min(int(t), cpu_count()) for t in args.threads.split(",")})
    progress = progress_printer()
    earlier, earlier_peaks = [], None
    if args.merge and (RESULTS / f"{name}.json").exists():
        earlier = [b for b in load_benches(RESULTS / f"{name}.json") if b.model not in models]
        earlier_peaks = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8")).get("peaks")
    progress(f"measuring this CPU's roofs ({kind.stem})")
    peaks = measure_peaks()
    if earlier_peaks:  # a roof is the best seen: a busy moment only lowers a figure
        peaks = dataclasses.replace(
            peaks, gflops={p: max(g, earlier_peaks["gflops"].get(p, 0.0)) for p, g in peaks.gflops.items()},
            memory_gbps=max(peaks.memory_gbps, earlier_peaks["memory_gbps"]))
    benches = []
    for bench in bench_models(models, Device("cpu"), batch_sizes=batch_sizes, threads=threads, budget_s=args.budget,
                              progress=progress):
        benches.append(bench)
        table = sorted(earlier + benches, key=lambda b: b.model)
        RESULTS.mkdir(parents=True, exist_ok=True)  # written after every model: a long run keeps what it measured
        (RESULTS / f"{name}.md").write_text(format_markdown(table, kind=kind, peaks=peaks), encoding="utf-8")
        (RESULTS / f"{name}.json").write_text(format_json(table, kind=kind, peaks=peaks), encoding="utf-8")
    plot(sorted(earlier + benches, key=lambda b: b.model), RESULTS / f"{name}.png")
    if args.op_profile:
        profiles = missed_target_profiles(benches, kind, peaks, progress)
        if profiles:
            with (RESULTS / f"{name}.md").open("a", encoding="utf-8") as fh:
                fh.write("\n" + "\n".join(profiles))
    progress(f"wrote {RESULTS / name}.{{md,json,png}}")
    return 0


def missed_target_profiles(benches: list, kind: object, peaks: object, progress: object) -> list[str]:
    """An op profile (Markdown) of the OpenVINO winner of each row that missed its target, against the table's
    roofs."""
    from op_profile import report

    sections = []
    for row, check in zip(summary_rows(benches), target_checks(benches, kind, peaks)):  # type: ignore[arg-type]
        backend, _, precision = row["hpi_backend"].partition("[")
        if check is None or check.met or backend != "openvino":
            continue
        progress(f"op profile of {row['model']} on {row['hpi_backend']}")  # type: ignore[operator]
        sections.append(report(row["model"], precision.rstrip("]"), row["threads"], runs=200, repeats=3,
                               heading="####", peaks=peaks))  # the roofs the table's bounds used
    return sections


if __name__ == "__main__":
    sys.exit(main())
