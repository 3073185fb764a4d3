"""Benchmark reports: benches as tables in the seeds' "normal / high-performance" format (Markdown, CSV, JSON).

The Markdown table puts the seeds' published figures beside ours; a JSON report reads back with
:func:`load_benches`, to re-format or re-plot a run without measuring again.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpi.bench.measure import ModelBench
from hpi.bench.targets import (
    TARGET_BATCH,
    TARGET_THREADS,
    CpuKind,
    Peaks,
    TargetCheck,
    check_target,
    cpu_kind,
)
from hpi.cards import ModelCard, get_card
from hpi.cpu import cpu_info
from hpi.device import Device, parse_device
from hpi.errors import UnknownModelError
from hpi.selection.record import CandidateResult, RatioInterval, SelectionRecord


def machine_description() -> str:
    """The machine a run measured on, in one line (CPU model, cores, OS, Python)."""
    info = cpu_info()
    return f"{info['model']}, {info['cores']} cores available, {platform.system()} {platform.machine()}, " \
           f"Python {platform.python_version()}"


def _card(model: str) -> ModelCard | None:
    try:
        return get_card(model)
    except UnknownModelError:  # a user's own model has no card
        return None


def _published(model: str, device: Device) -> tuple[float | None, float | None]:
    card = _card(model)
    if card is None:
        return None, None
    pair = card.latency.gpu_ms if device.is_gpu else card.latency.cpu_ms
    return pair.normal, pair.hpi


def target_checks(benches: Sequence[ModelBench], kind: CpuKind | None = None, peaks: Peaks | None = None
                  ) -> list[TargetCheck | None]:
    """:func:`~hpi.bench.targets.check_target` for each row of :func:`summary_rows` (None for a row the
    targets do not cover: not batch 1 at 2 threads, a GPU, or no normal-mode figure)."""
    kind = kind or cpu_kind()
    checks: list[TargetCheck | None] = []
    for r in summary_rows(benches):
        card = _card(r["model"])
        if (r["speedup"] is None or r["batch"] != TARGET_BATCH or r["threads"] != TARGET_THREADS
                or parse_device(r["device"]).is_gpu):
            checks.append(None)
            continue
        checks.append(check_target(r, kind, peaks, macs=card.flops if card else None,
                                   params=card.params if card else None, overhead_ms=r["hp_overhead_ms"]))
    return checks


def fastest_rejected_reduced(rec: SelectionRecord) -> CandidateResult | None:
    """The fastest timed reduced-precision candidate when every one that ran was rejected by the accuracy gate
    (seeded weights can make rounding chaotic): reported beside the gated choice with its measured drift, never
    chosen. None when a reduced-precision candidate passed, or none was timed."""
    reduced = [r for r in rec.results if r.candidate.precision != "fp32" and r.status in ("winner", "passed",
                                                                                           "rejected")]
    rejected = [r for r in reduced if r.status == "rejected" and r.timing is not None]
    if not rejected or len(rejected) < len(reduced):
        return None
    return min(rejected, key=lambda r: r.timing.p50_ms)


def summary_rows(benches: Sequence[ModelBench]) -> list[dict[str, Any]]:
    """One row per model x threads x batch: normal mode vs high-performance mode, with the seeds' figures, the
    selection's end-to-end speed-up, the p50 of each of its rounds, and the fastest reduced-precision candidate with
    its drift where every one failed the gate (``not_passing_*``)."""
    rows = []
    for b in benches:
        pub_normal, pub_hpi = _published(b.model, parse_device(b.device))
        for run in b.runs:
            rec: SelectionRecord = run["record"]
            normal, win = rec.normal, rec.winner
            failing = fastest_rejected_reduced(rec)
            acc = failing.accuracy if failing else None
            rows.append({
                "model": b.model,
                "weights": b.weights,
                "device": b.device,
                "threads": run["threads"],
                "batch": run["batch_size"],
                "normal_p50_ms": normal.timing.p50_ms if normal and normal.timing else None,
                "hpi_p50_ms": win.timing.p50_ms,
                "hpi_p90_ms": win.timing.p90_ms,
                "hpi_p99_ms": win.timing.p99_ms,
                "hpi_backend": win.candidate.label,
                "normal_backend": normal.candidate.label if normal else None,
                "speedup": rec.speedup,
                "e2e_speedup": rec.e2e_speedup,
                # What the choice was made on: the winner's ratio to normal mode with its interval (None for normal
                # mode itself, and for records made before intervals were recorded).
                "decided_on": win.ratio_interval.to_dict() if win.ratio_interval else None,
                "normal_rounds_p50_ms": list(normal.rounds_p50_ms) if normal else [],
                "hpi_rounds_p50_ms": list(win.rounds_p50_ms),
                # Preprocessing and Python per image: the winner's end to end minus inference in the same (median)
                # selection round, timed back to back in one process (steadier than the separate stage runs).
                "hp_overhead_ms": (win.e2e_timing.p50_ms - win.timing.p50_ms) / run["batch_size"]
                if win.e2e_timing else None,
                "published_normal_ms": pub_normal,
                "published_hpi_ms": pub_hpi,
                "published_speedup": (pub_normal / pub_hpi) if pub_normal and pub_hpi else None,
                "not_passing_candidate": failing.candidate.label if failing else None,
                "not_passing_p50_ms": failing.timing.p50_ms if failing else None,
                "not_passing_speedup": (normal.timing.p50_ms / failing.timing.p50_ms
                                        if failing and normal and normal.timing else None),
                "not_passing_rel_error": acc.max_rel_error if acc else None,
                "not_passing_top1_agreement": acc.top1_agreement if acc else None,
                "not_passing_top5_overlap": acc.top5_overlap if acc else None,
                "not_passing_why": failing.reason if failing else None,
            })
    return rows


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _rounds(values: Sequence[float]) -> str:
    """Round figures and their spread: ``3.83 / 3.65 / 4.37 (1.20x)``."""
    if not values:
        return "-"
    spread = f" ({max(values) / min(values):.2f}x)" if len(values) > 1 and min(values) > 0 else ""
    return " / ".join(_f(v) for v in values) + spread


def _decided_on(row: dict[str, Any]) -> str:
    """The summary's "decided on" cell: the winner's interval, or why there is none."""
    if row["decided_on"]:
        return _interval(RatioInterval(**row["decided_on"]))
    return "normal mode kept" if row["hpi_backend"] == row.get("normal_backend") else "-"


def _interval(interval: RatioInterval | None) -> str:
    """``0.873 (0.85-0.90, 90%, 5 rounds end to end: faster)``, or - for the reference and unmeasured ones."""
    if interval is None:
        return "-"
    return (f"{interval.estimate:.3f} ({interval.low:.3f}-{interval.high:.3f}, {interval.confidence:.0%}, "
            f"{interval.rounds} rounds {interval.path}: {interval.verdict})")


def header_lines(benches: Sequence[ModelBench], kind: CpuKind | None = None, peaks: Peaks | None = None
                 ) -> list[str]:
    """Where and how a table was measured: CPU name and kind, its flags, date, weights, load, roofs."""
    kind = kind or cpu_kind()
    weights = ", ".join(sorted({b.weights for b in benches})) or "-"
    load = "; ".join(f"{b.model} {b.loadavg[0]} -> {b.loadavg[1]}" for b in benches if b.loadavg[0])
    lines = [f"Machine: {machine_description()}. CPU kind: `{kind.stem}`; flags: {' '.join(kind.flags)}.",
             f"Date: {time.strftime('%Y-%m-%d')}. Weights: {weights}. 1-minute load average at start -> end of each "
             f"model: {load or '-'}."]
    if kind.emulated:
        lines.append(kind.emulation_note())
    if peaks:
        roofs = ", ".join(f"{p} {g:.0f} GFLOPS" for p, g in peaks.gflops.items())
        lines.append(f"Measured roofs at {peaks.threads} threads: {roofs}; memory copy {peaks.memory_gbps:.1f} GB/s "
                     f"({'; '.join(f'{k}: {v}' for k, v in peaks.notes.items())}).")
    return [*lines, ""]


def format_markdown(benches: Sequence[ModelBench], *, kind: CpuKind | None = None, peaks: Peaks | None = None
                    ) -> str:
    """The header (:func:`header_lines`), the summary table (normal vs high-performance mode, the selection's
    rounds, published figures, the verdict against this CPU kind's target), the targets with the bound that stands
    in the way of each miss, then every candidate of every run and the stage split."""
    checks = target_checks(benches, kind, peaks)
    lines = header_lines(benches, kind, peaks)
    lines += [
        "| Model | weights | threads | batch | normal mode p50 ms (Paddle fp32) | high-performance p50 / p90 / p99 ms "
        "| backend | speed-up | speed-up end to end | decided on: hp / normal (interval) "
        "| p50 per round (normal; high-performance) | published CPU ms (normal / hp) | published speed-up | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = summary_rows(benches)
    for r, check in zip(rows, checks):
        verdict = "-" if check is None or check.met is None else (
            f"met ({check.target:.2f}x)" if check.met else f"missed by {check.target / check.speedup:.2f}x "
            f"({check.target:.2f}x)")
        lines.append(
            f"| {r['model']} | {r['weights']} | {_f(r['threads'])} | {r['batch']} | {_f(r['normal_p50_ms'])} "
            f"| {_f(r['hpi_p50_ms'])} / {_f(r['hpi_p90_ms'])} / {_f(r['hpi_p99_ms'])} | {r['hpi_backend']} "
            f"| {_f(r['speedup'])}x | {_f(r['e2e_speedup'])}x | {_decided_on(r)} | {_rounds(r['normal_rounds_p50_ms'])}; "
            f"{_rounds(r['hpi_rounds_p50_ms'])} | {_f(r['published_normal_ms'])} / {_f(r['published_hpi_ms'])} "
            f"| {_f(r['published_speedup'])}x | {verdict} |"
        )
    checked = [c for c in checks if c is not None]
    if checked:
        lines += ["", f"Targets (batch {TARGET_BATCH}, {TARGET_THREADS} threads, this CPU kind):", ""]
        lines += [f"- {c.model}: {c.text}" for c in checked]
    lines += not_passing_lines(rows)
    for b in benches:
        for run in b.runs:
            rec: SelectionRecord = run["record"]
            lines += ["", f"#### {b.model}: every candidate (threads={_f(run['threads'])}, batch={run['batch_size']}, "
                      f"weights: {b.weights})", "", fp32_bound_line(rec), "",
                      "| candidate | status | p50 ms | p50 per round | end to end p50 per round | others' CPU per round "
                      "(cores) | candidate/normal (interval) | p90 ms | p99 ms | items/s | rel. error | top-1 agree "
                      "| top-5 overlap | note |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for res in rec.results:
                t, a = res.timing, res.accuracy
                mark = "**winner**" if res.status == "winner" else res.status
                lines.append(
                    f"| {res.candidate.label} | {mark} | {_f(t and t.p50_ms)} | {_rounds(res.rounds_p50_ms)} "
                    f"| {_rounds(res.rounds_e2e_p50_ms)} | {' / '.join(_f(c) for c in res.rounds_other_cores) or '-'} "
                    f"| {_interval(res.ratio_interval)} | {_f(t and t.p90_ms)} | {_f(t and t.p99_ms)} | {_f(t and t.throughput, 1)} "
                    f"| {_f(a and a.max_rel_error, 5)} | {_f(a and a.top1_agreement)} | {_f(a and a.top5_overlap)} "
                    f"| {res.reason}{f'; int8 overflow: {res.int8_overflow}' if res.int8_overflow else ''} |"
                )
            if run.get("stages"):
                lines += ["", "| mode | backend | decode | preprocess | inference | postprocess | end to end "
                          "(ms per batch, p50) |", "|---|---|---|---|---|---|---|"]
                for mode, s in run["stages"].items():
                    lines.append(
                        f"| {mode} | {s['candidate']} | {_f(s['decode']['p50_ms'])} | {_f(s['preprocess']['p50_ms'])} "
                        f"| {_f(s['inference']['p50_ms'])} | {_f(s['postprocess']['p50_ms'], 3)} "
                        f"| {_f(s['end_to_end']['p50_ms'])} |"
                    )
    return "\n".join(lines) + "\n"


def not_passing_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown for the rows whose reduced-precision candidates all failed the gate: the gated choice beside the
    fastest of them, labelled as not passing (the default gate is not relaxed to pass it)."""
    failing = [r for r in rows if r["not_passing_candidate"]]
    if not failing:
        return []
    lines = ["", "Reduced precision that did NOT pass the default accuracy gate (measured and shown for comparison, "
             "never chosen; the high-performance column above is the gated choice):", "",
             "| Model | weights | threads | batch | gated choice (p50 ms) | fastest reduced precision, NOT passing "
             "(p50 ms) | its speed-up | rel. error | top-1 agree | top-5 overlap | why rejected |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in failing:
        lines.append(
            f"| {r['model']} | {r['weights']} | {_f(r['threads'])} | {r['batch']} | {r['hpi_backend']} "
            f"({_f(r['hpi_p50_ms'])}) | {r['not_passing_candidate']} ({_f(r['not_passing_p50_ms'])}) "
            f"| {_f(r['not_passing_speedup'])}x | {_f(r['not_passing_rel_error'], 5)} "
            f"| {_f(r['not_passing_top1_agreement'], 3)} | {_f(r['not_passing_top5_overlap'], 3)} "
            f"| {r['not_passing_why']} |")
    return lines


def fp32_bound_line(rec: SelectionRecord) -> str:
    """The fp32 relative-error bound a selection used, the reordering spread it came from, and the images the gate
    judged."""
    if rec.fp32_bound is None:
        return "fp32 bound: not recorded (a decision made before the bound was measured)"
    spread = "-" if rec.fp32_spread is None else f"{rec.fp32_spread:.2e}"
    line = f"fp32 bound: {rec.fp32_bound:.2e} (reference's reordering spread {spread}: {rec.fp32_spread_from})"
    return f"{line}; the gate judged {rec.judged_on}" if rec.judged_on else line


def format_csv(benches: Sequence[ModelBench]) -> str:
    """One CSV row per candidate of every run."""
    buf = io.StringIO()
    rows = []
    for b in benches:
        for run in b.runs:
            for res in run["record"].results:
                t, a = res.timing, res.accuracy
                rows.append({
                    "model": b.model, "weights": b.weights, "device": b.device, "threads": run["threads"],
                    "batch": run["batch_size"], "candidate": res.candidate.label, "status": res.status,
                    **{k: (getattr(t, k) if t else None) for k in ("p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms",
                                                                    "throughput")},
                    "max_rel_error": a.max_rel_error if a else None,
                    "top1_agreement": a.top1_agreement if a else None,
                    "top5_overlap": a.top5_overlap if a else None,
                    "reason": res.reason,
                })
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def format_json(benches: Sequence[ModelBench], *, kind: CpuKind | None = None, peaks: Peaks | None = None) -> str:
    """The machine (CPU name, kind, flags), the measured roofs, the summary rows with their target checks, and every
    bench; :func:`load_benches` reads it back."""
    kind = kind or cpu_kind()
    checks = target_checks(benches, kind, peaks)
    summary = [{**r, "target": c.to_dict() if c else None} for r, c in zip(summary_rows(benches), checks)]
    return json.dumps({"machine": machine_description(), "cpu": {"model": kind.model, "kind": kind.stem,
                                                                 "flags": list(kind.flags),
                                                                 **({"emulated_on_flags": list(kind.real_flags)}
                                                                    if kind.emulated else {})},
                       "date": time.strftime("%Y-%m-%d"), "peaks": peaks.to_dict() if peaks else None,
                       "summary": summary, "models": [b.to_dict() for b in benches]}, indent=2)


def load_benches(path: str | Path) -> list[ModelBench]:
    """The benches of a ``format_json`` file (to re-plot or re-format a run without measuring again)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [ModelBench(m["model"], m["weights"], m["device"],
                       [{**r, "record": SelectionRecord.from_dict(r["record"])} for r in m["runs"]],
                       tuple(m.get("loadavg", ("", ""))))  # type: ignore[arg-type]
            for m in data["models"]]
