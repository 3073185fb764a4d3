"""The tune report: throughput against the chosen-percentile latency for every deployment and load level tried,
the budget line, the chosen point marked; as a PNG (matplotlib), a self-contained HTML page (inline SVG, no
network), and the table in markdown and JSON.

Files in the output directory: ``report.png``, ``report.html``, ``report.md``, ``table.json``.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

CHOSEN_COLOUR = "#e6007e"  # magenta: no engine's colour, so a browser screenshot can find the chosen point
BUDGET_COLOUR = "#d62728"
ENGINE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22")


def table(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per deployment and load level measured, in measuring order; ``chosen`` marks the chosen one."""
    chosen = rec["chosen"]
    rows = []
    for i, m in enumerate(rec["measurements"], 1):
        d = m["deployment"]
        key = _key(d)
        if not m["points"]:
            rows.append({"n": i, "deployment": key, **_knobs(d), "concurrency": None, "throughput_rps": None,
                         "latency_ms": None, "p50_ms": None, "errors": None, "within_budget": False,
                         "chosen": False, "failure": m.get("failure", "")})
        for p in m["points"]:
            within = p["errors"] == 0 and p["latency_ms"] is not None and p["latency_ms"] <= rec["budget_ms"]
            rows.append({"n": i, "deployment": key, **_knobs(d), "concurrency": p["concurrency"],
                         "throughput_rps": p["throughput_rps"], "latency_ms": p["latency_ms"], "p50_ms": p["p50_ms"],
                         "errors": p["errors"], "within_budget": within,
                         "chosen": chosen["met_budget"] and key == chosen["key"]
                         and p["concurrency"] == chosen["concurrency"], "failure": ""})
    return rows


def _knobs(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in ("backend", "precision", "instances", "threads", "max_batch_size", "batch_delay_ms")}


def _key(d: dict[str, Any]) -> str:
    from hpi.tune.search import Deployment

    return Deployment.from_dict(d).key


def _series(rec: dict[str, Any]) -> list[tuple[str, str, list[tuple[float, float, int]]]]:
    """(deployment key, engine, [(latency, throughput, concurrency)]) per measured deployment."""
    out = []
    for m in rec["measurements"]:
        pts = [(p["latency_ms"], p["throughput_rps"], p["concurrency"]) for p in m["points"]
               if p["latency_ms"] is not None]
        if pts:
            d = m["deployment"]
            out.append((_key(d), f"{d['backend']}[{d['precision']}]", pts))
    return out


def _chosen_xy(rec: dict[str, Any]) -> tuple[float, float] | None:
    """Where the chosen point is drawn: the search's figure of the chosen load level (the one on the curves); for a
    budget nobody met, the closest deployment's lowest-latency level."""
    c = rec["chosen"]
    if c["met_budget"]:
        return c["search_latency_ms"], c["search_throughput_rps"]
    for m in rec["measurements"]:
        if _key(m["deployment"]) == c["key"]:
            for p in m["points"]:
                if p["concurrency"] == c.get("closest_concurrency") and p["latency_ms"] is not None:
                    return p["latency_ms"], p["throughput_rps"]
    return None


def _title(rec: dict[str, Any]) -> str:
    cpu = rec.get("key", {}).get("cpu", "")
    cores = rec["search"]["cores"]
    return (f"hpi tune {rec['model']} ({rec['target']}): throughput vs p{rec['percentile']:g}, "
            f"budget {rec['budget_ms']:g} ms, {cpu} ({cores} cores)")


def _summary(rec: dict[str, Any]) -> str:
    c, s = rec["chosen"], rec["search"]
    pct = f"p{rec['percentile']:g}"
    if c["met_budget"]:
        head = (f"Chosen: {c['key']} at {_clients(c['concurrency'])}: {c['throughput_rps']:.1f} req/s, {pct} "
                f"{c['latency_ms']:.2f} ms (search: {c['search_throughput_rps']:.1f} req/s, {pct} "
                f"{c['search_latency_ms']:.2f} ms).")
        if c.get("confirmed_within_budget") is False:
            head += (f" It was over the budget when confirmed ({pct} {c['latency_ms']:.2f} ms): the machine was too "
                     "noisy for this budget.")
    else:
        head = f"No deployment met the budget: {c['shortfall']}."
    small = " The space on a machine of 2 cores is small (workers x threads is 1x2 or 2x1)." if s["small_space"] else ""
    return (f"{head} Search: {s['method']}, {s['measured']} of {s['space_size']} deployments measured, stopped: "
            f"{s['stopped']}; measured through {rec['measured_through']}.{small}")


def write_png(rec: dict[str, Any], path: Path) -> Path:
    """The chart as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    colours: dict[str, str] = {}
    for _, engine, pts in _series(rec):
        colour = colours.setdefault(engine, ENGINE_COLOURS[len(colours) % len(ENGINE_COLOURS)])
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, "-o", color=colour, alpha=0.55, markersize=4, linewidth=1,
                label=engine if engine not in ax.get_legend_handles_labels()[1] else None)
    ax.axvline(rec["budget_ms"], color=BUDGET_COLOUR, linestyle="--", linewidth=1.5,
               label=f"budget {rec['budget_ms']:g} ms")
    xy = _chosen_xy(rec)
    if xy is not None:
        met = rec["chosen"]["met_budget"]
        ax.plot([xy[0]], [xy[1]], marker="*", markersize=20, color=CHOSEN_COLOUR if met else "none",
                markeredgecolor=CHOSEN_COLOUR, markeredgewidth=2, linestyle="none",
                label=f"{'chosen' if met else 'closest (over the budget)'}: {rec['chosen']['key']}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.set_xlabel(f"p{rec['percentile']:g} latency (ms, log scale)")
    ax.set_ylabel("throughput (requests/s)")
    ax.set_title(_title(rec), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def svg_chart(rec: dict[str, Any], width: int = 880, height: int = 520) -> str:
    """The chart as inline SVG: one polyline per deployment (its load levels), the budget line, the chosen point
    (``id="chosen-point"``), each point with a tooltip."""
    left, right, top, bottom = 70, 20, 30, 50
    series = _series(rec)
    xs = [p[0] for _, _, pts in series for p in pts] + [rec["budget_ms"]]
    ys = [p[1] for _, _, pts in series for p in pts] + [0.0]
    x_lo, x_hi = math.log10(max(min(xs), 1e-3) / 1.3), math.log10(max(xs) * 1.3)
    y_step = _nice_step(max(ys) * 1.1 / 5)
    y_hi = y_step * math.ceil(max(ys) * 1.1 / y_step)

    def px(x: float) -> float:
        return left + (math.log10(max(x, 1e-3)) - x_lo) / (x_hi - x_lo) * (width - left - right)

    def py(y: float) -> float:
        return top + (1 - y / y_hi) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="throughput against latency">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="none" stroke="#444"/>']
    for k in range(math.floor(x_lo), math.ceil(x_hi) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** k
            if x_lo <= math.log10(v) <= x_hi:
                x = px(v)
                parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#ddd"/>')
                parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" font-size="11" text-anchor="middle">'
                             f'{v:g}</text>')
    for i in range(round(y_hi / y_step) + 1):
        v = y_step * i
        y = py(v)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{v:.0f}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 12}" font-size="12" text-anchor="middle">'
                 f'p{rec["percentile"]:g} latency (ms, log scale)</text>')
    parts.append(f'<text x="16" y="{(top + height - bottom) / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 16 {(top + height - bottom) / 2})">throughput (requests/s)</text>')
    colours: dict[str, str] = {}
    for key, engine, pts in series:
        colour = colours.setdefault(engine, ENGINE_COLOURS[len(colours) % len(ENGINE_COLOURS)])
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in pts)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-opacity="0.6"/>')
        for x, y, c in pts:
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}" fill-opacity="0.7">'
                         f'<title>{html.escape(key)}, {c} clients: {y:.1f} req/s, {x:.2f} ms</title></circle>')
    bx = px(rec["budget_ms"])
    parts.append(f'<line id="budget-line" x1="{bx:.1f}" y1="{top}" x2="{bx:.1f}" y2="{height - bottom}" '
                 f'stroke="{BUDGET_COLOUR}" stroke-width="2" stroke-dasharray="6 4"/>')
    parts.append(f'<text x="{bx + 4:.1f}" y="{top + 14}" font-size="12" fill="{BUDGET_COLOUR}">budget '
                 f'{rec["budget_ms"]:g} ms</text>')
    xy = _chosen_xy(rec)
    if xy is not None:
        cx, cy = px(xy[0]), py(xy[1])
        if rec["chosen"]["met_budget"]:
            parts.append(f'<circle id="chosen-point" cx="{cx:.1f}" cy="{cy:.1f}" r="11" fill="{CHOSEN_COLOUR}" '
                         f'stroke="black" stroke-width="1.5"><title>chosen: {html.escape(rec["chosen"]["key"])}'
                         '</title></circle>')
            label = "chosen"
        else:
            parts.append(f'<circle id="closest-point" cx="{cx:.1f}" cy="{cy:.1f}" r="11" fill="none" '
                         f'stroke="{CHOSEN_COLOUR}" stroke-width="3"><title>closest (over the budget): '
                         f'{html.escape(rec["chosen"]["key"])}</title></circle>')
            label = "closest, over the budget"
        parts.append(f'<text x="{cx + 14:.1f}" y="{cy + 4:.1f}" font-size="12" font-weight="bold">{label}</text>')
    legend_y = top + 34
    for engine, colour in colours.items():
        parts.append(f'<rect x="{width - right - 170}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{width - right - 155}" y="{legend_y}" font-size="11">{html.escape(engine)}</text>')
        legend_y += 16
    parts.append("</svg>")
    return "\n".join(parts)


def _clients(n: int) -> str:
    return f"{n} client{'s' if n != 1 else ''}"


def _nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at least ``raw`` (an axis' tick step)."""
    if not raw > 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def markdown(rec: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The summary, the commands and the table in markdown."""
    lines = [f"# {_title(rec)}", "", _summary(rec), ""]
    for key in ("serve_command", "serve_command_explicit"):
        if rec.get(key):
            lines += [f"`{rec[key]}`", ""]
    lines += ["| # | deployment | clients | req/s | p{:g} ms | p50 ms | errors | inside | |".format(rec["percentile"]),
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "**chosen**" if r["chosen"] else r["failure"]
        lines.append(f"| {r['n']} | {r['deployment']} | {_fmt(r['concurrency'])} | {_fmt(r['throughput_rps'])} | "
                     f"{_fmt(r['latency_ms'])} | {_fmt(r['p50_ms'])} | {_fmt(r['errors'])} | "
                     f"{'yes' if r['within_budget'] else 'no'} | {mark} |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def page(rec: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The self-contained HTML page: summary, commands, the SVG chart and the table (no scripts, no network)."""
    esc = html.escape
    cmds = "".join(f"<pre>{esc(rec[k])}</pre>" for k in ("serve_command", "serve_command_explicit") if rec.get(k))
    head = "".join(f"<th>{h}</th>" for h in ("#", "deployment", "clients", "req/s", f"p{rec['percentile']:g} ms",
                                              "p50 ms", "errors", "inside the budget"))
    body = "".join(
        f'<tr{" class=chosen" if r["chosen"] else ""}><td>{r["n"]}</td><td>{esc(r["deployment"])}</td>'
        f"<td>{_fmt(r['concurrency'])}</td><td>{_fmt(r['throughput_rps'])}</td><td>{_fmt(r['latency_ms'])}</td>"
        f"<td>{_fmt(r['p50_ms'])}</td><td>{_fmt(r['errors'])}</td><td>{'yes' if r['within_budget'] else 'no'}"
        f"{' (chosen)' if r['chosen'] else ''}{esc(r['failure'])}</td></tr>" for r in rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(_title(rec))}</title>
<style>body{{font-family:sans-serif;margin:20px;color:#222}} pre{{background:#f4f4f4;padding:6px;white-space:pre-wrap}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
tr.chosen{{background:#fde0ef;font-weight:bold}}</style></head>
<body><h1 style="font-size:18px">{esc(_title(rec))}</h1>
<p id="summary">{esc(_summary(rec))}</p>{cmds}
{svg_chart(rec)}
<table id="measurements"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>
"""


def write_report(rec: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``report.png``, ``report.html``, ``report.md`` and ``table.json`` into ``out``."""
    from hpi.tune.record import write_json

    rows = table(rec)
    files = {"png": write_png(rec, out / "report.png")}
    (out / "report.html").write_text(page(rec, rows), encoding="utf-8")
    (out / "report.md").write_text(markdown(rec, rows), encoding="utf-8")
    write_json(out / "table.json", {"budget_ms": rec["budget_ms"], "percentile": rec["percentile"], "rows": rows})
    files |= {"html": out / "report.html", "md": out / "report.md", "json": out / "table.json"}
    return files
