"""Benchmark charts: per run, the figure the selection decided on (end to end where it was timed so, else inference)
for every timed candidate, with each round's value and the spread of the rounds, beside candidate/normal with its
confidence interval and the line a candidate must clear. The winner is drawn green."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hpi.bench.measure import ModelBench
from hpi.bench.report import machine_description
from hpi.selection.record import CandidateResult, SelectionRecord


def decisive_rounds(record: SelectionRecord, result: CandidateResult) -> tuple[list[float], str]:
    """The per-round p50s of ``result`` on the figure the choice compared with normal mode, and its name: end to end
    where both it and the reference were timed end to end, else inference (as the selection paired them)."""
    reference = next((r for r in record.results if r.candidate.label == record.reference), None)
    if result.ratio_interval is not None:
        path = result.ratio_interval.path
    else:
        timed_e2e = bool(result.rounds_e2e_p50_ms or (result.e2e_timing and not result.rounds_p50_ms))
        path = "end to end" if timed_e2e and reference and reference.rounds_e2e_p50_ms else "inference"
    if path == "end to end":
        if result.rounds_e2e_p50_ms:
            return list(result.rounds_e2e_p50_ms), path
        if result.e2e_timing and not result.rounds_p50_ms:  # a rejected candidate: its one (first) round
            return [result.e2e_timing.p50_ms], path
        path = "inference"
    rounds = result.rounds_p50_ms or ((result.timing.p50_ms,) if result.timing else ())
    return list(rounds), path


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]  # the median round, as the record's timing is


def plot(benches: Sequence[ModelBench], path: str | Path) -> Path:
    """One row per run: the decisive p50 (median round, bar; each round, dots; whisker from the fastest to the slowest
    round) and candidate/normal with its interval, of every timed candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(b, r) for b in benches for r in b.runs]
    fig, axes = plt.subplots(len(runs), 2, figsize=(12, 2.8 * len(runs) + 0.9), squeeze=False)
    for (b, run), (ax_ms, ax_ratio) in zip(runs, axes):
        record: SelectionRecord = run["record"]
        res = [r for r in record.results if r.timing is not None]
        reference = next((r for r in res if r.candidate.label == record.reference), None)
        decided = decisive_rounds(record, reference)[1] if reference else "inference"
        # A candidate timed on another figure (a rejected one: first round, inference only) is labelled and hatched.
        labels = [r.candidate.label + ("" if decisive_rounds(record, r)[1] == decided else f"\n({decisive_rounds(record, r)[1]})")
                  for r in res]
        colors = ["tab:green" if r.status == "winner" else "tab:red" if r.status == "rejected" else "tab:blue"
                  for r in res]
        for y, (r, color) in enumerate(zip(res, colors)):
            rounds, decided_on = decisive_rounds(record, r)
            mid = _median(rounds)
            ax_ms.barh(y, mid, color=color, alpha=0.8, hatch="" if decided_on == decided else "//")
            ax_ms.errorbar(mid, y, xerr=[[mid - min(rounds)], [max(rounds) - mid]], fmt="none", ecolor="black",
                           capsize=3, lw=1)
            ax_ms.scatter(rounds, [y] * len(rounds), s=10, color="black", zorder=3)
            interval = r.ratio_interval
            if interval is not None:
                ax_ratio.barh(y, interval.estimate, color=color, alpha=0.8)
                ax_ratio.errorbar(interval.estimate, y, xerr=[[interval.estimate - interval.low],
                                                              [interval.high - interval.estimate]],
                                  fmt="none", ecolor="black", capsize=3, lw=1)
            elif r.candidate.label == record.reference:
                ax_ratio.barh(y, 1.0, color=color, alpha=0.8)
        line = next((r.ratio_interval.line for r in res if r.ratio_interval), None)
        for ax in (ax_ms, ax_ratio):
            ax.set_yticks(range(len(res)), labels)
        ax_ms.set_xlabel(f"{decided} p50 ms (what the choice compared)\nbar = median round, dots = rounds, "
                         "whisker = fastest..slowest round", fontsize=8)
        ax_ms.set_title(f"{b.model} threads={run['threads']} batch={run['batch_size']} ({b.weights} weights)",
                        fontsize=9)
        ax_ratio.axvline(1.0, color="grey", lw=0.8)
        if line is not None:
            ax_ratio.axvline(line, color="tab:green", lw=0.8, ls="--")
            confidence = next(r.ratio_interval.confidence for r in res if r.ratio_interval)
            ax_ratio.set_xlabel(f"candidate / normal mode: geometric mean of paired rounds, {confidence:.0%} "
                                f"interval\na winner's interval lies left of the dashed line ({line:.2f})", fontsize=8)
        else:
            ax_ratio.set_xlabel("candidate / normal mode")
    height = fig.get_size_inches()[1]
    fig.suptitle(f"hpi bench: {machine_description()}\ngreen = winner (the figure it was chosen on), red = rejected "
                 "by the accuracy gate, blue = passed", fontsize=9, y=1 - 0.08 / height, va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / height))  # the title keeps its own top 0.6 inch
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
