"""Benchmark charts: latency (p50 with p90 whiskers) and throughput of every candidate, as a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hpi.bench.measure import ModelBench
from hpi.bench.report import machine_description


def plot(benches: Sequence[ModelBench], path: str | Path) -> Path:
    """Latency (p50 with p90 whiskers) and throughput of every passing candidate, one panel pair per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(b, r) for b in benches for r in b.runs]
    fig, axes = plt.subplots(len(runs), 2, figsize=(12, 2.6 * len(runs) + 0.8), squeeze=False)
    for (b, run), (ax_lat, ax_tp) in zip(runs, axes):
        res = [r for r in run["record"].results if r.timing is not None]
        labels = [r.candidate.label for r in res]
        p50 = [r.timing.p50_ms for r in res]
        err = [[0] * len(res), [r.timing.p90_ms - r.timing.p50_ms for r in res]]
        colors = ["tab:green" if r.status == "winner" else "tab:red" if r.status == "rejected" else "tab:blue"
                  for r in res]
        ax_lat.barh(labels, p50, xerr=err, color=colors)
        ax_lat.set_xlabel("latency ms (p50, whisker to p90)")
        ax_lat.set_title(f"{b.model} threads={run['threads']} batch={run['batch_size']} ({b.weights} weights)",
                         fontsize=9)
        ax_tp.barh(labels, [r.timing.throughput for r in res], color=colors)
        ax_tp.set_xlabel("images / s")
    height = fig.get_size_inches()[1]
    fig.suptitle(f"hpi bench: {machine_description()}\ngreen = winner, red = rejected by the accuracy gate",
                 fontsize=9, y=1 - 0.08 / height, va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / height))  # the title keeps its own top 0.6 inch
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
