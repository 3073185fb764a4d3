"""``hpi bench`` / ``hpi export`` / ``hpi eval``: latency tables, ahead-of-time builds, accuracy on a dataset.

Every timing comes from :mod:`hpi.harness`, each configuration in its own process; the tables are in the seeds'
"normal / high-performance" format with percentiles, and print the seeds' published figures beside ours.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpi.cache import EngineCache
from hpi.device import Device, cpu_count, cpu_info, parse_device, resolve_threads
from hpi.errors import HpiError, InvalidConfigError, InvalidInputError, UnknownModelError
from hpi.harness import Timing, run_isolated, time_callable
from hpi.model import ModelSource
from hpi.select import HpiConfig
from hpi.selection import SAMPLE_IMAGES, SelectionRecord, cached_selection, select

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "PP-LCNet_x1_0"
STAGE_IMAGE_SIZE = (500, 375)  # the reference JPEG: 500x375 to 224x224


def resolve_source(model: str, model_dir: str | None = None, *, build: bool = True,
                   notify: Callable[[str], None] | None = None) -> ModelSource:
    """A model directory, the store's copy, or (``build``) a seeded zoo build written into the store."""
    if model_dir:
        return ModelSource.from_path(model_dir, model_name=model)
    from hpi import zoo

    found = zoo.locate(model)
    if found is None:
        if not build:
            raise UnknownModelError(f"model {model!r} is not in the local model store; run 'hpi zoo build {model}'")
        if notify:
            notify(f"building {model} from the zoo (seeded weights) into the local model store")
        found = zoo.build(model)
    return ModelSource.from_path(found, model_name=model)


def weights_label(source: ModelSource) -> str:
    from hpi.zoo.store import weights_kind

    return weights_kind(source.directory) or "user"


# --------------------------------------------------------------------------------------------------------------
# Stage split: decode, preprocess, inference, postprocess, end to end


def stage_image(tmp_dir: Path) -> Path:
    """The reference JPEG for stage timings: a built-in photo at 500x375."""
    import cv2

    src = cv2.imread(str(SAMPLE_IMAGES / "chelsea.jpg"))
    path = tmp_dir / "stage_500x375.jpg"
    cv2.imwrite(str(path), cv2.resize(src, STAGE_IMAGE_SIZE, interpolation=cv2.INTER_AREA),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def measure_stages(request: dict[str, Any]) -> dict[str, Any]:
    """Per-stage timings of one predictor configuration (runs isolated). ``fast`` picks hpi's preprocessing
    path; otherwise PaddleX's reference op chain is used, as PaddleX's normal mode runs it."""
    from hpi.inputs import expand_inputs
    from hpi.predictor import Predictor
    from hpi.preprocess import reference
    from hpi.preprocess.decode import decode_image
    from hpi.select import BackendChoice
    from hpi.selection import engine_from_request

    source, engine, _ = engine_from_request(request)
    predictor = Predictor(source, engine, BackendChoice(engine.name, engine.config, "bench", "explicit"),
                          fast_preprocess=bool(request["fast"]))
    bs, budget = int(request["batch_size"]), float(request["budget_s"])
    path = request["image"]
    data = Path(path).read_bytes()
    rgb = decode_image(data, path)
    images = [rgb] * bs
    batch = predictor.preprocess(images)
    if not request["fast"]:  # the baseline really is PaddleX's chain
        np.testing.assert_array_equal(batch, reference.preprocess_batch(source.spec.preprocess, images))
    output = engine.run(batch)[0]
    item = expand_inputs([path])[0]

    def post() -> None:
        for row in output:
            predictor._make_result(item, rgb, row, None)

    timings = {
        "decode": time_callable(lambda: [decode_image(data, path) for _ in range(bs)], budget_s=budget,
                                items_per_call=bs),
        "preprocess": time_callable(lambda: predictor.preprocess(images), budget_s=budget, items_per_call=bs),
        "inference": time_callable(lambda: engine.run(batch), budget_s=budget, items_per_call=bs),
        "postprocess": time_callable(post, budget_s=budget, items_per_call=bs),
        "end_to_end": time_callable(lambda: list(predictor.predict([path] * bs, batch_size=bs)), budget_s=budget,
                                    items_per_call=bs),
    }
    engine.close()
    return {k: v.to_dict() for k, v in timings.items()}


# --------------------------------------------------------------------------------------------------------------
# One model's benchmark


@dataclass
class ModelBench:
    """Everything measured for one model on one device."""

    model: str
    weights: str  # "seeded" (zoo build), "real" (store) or "user" (a directory given)
    device: str
    runs: list[dict[str, Any]] = field(default_factory=list)  # {threads, batch_size, record, stages}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "weights": self.weights, "device": self.device,
                "runs": [{**r, "record": r["record"].to_dict()} for r in self.runs]}


def bench_model(
    source: ModelSource,
    device: Device,
    *,
    batch_sizes: Sequence[int] = (1,),
    threads: Sequence[int | None] = (None,),
    allow_reduced_precision: bool = True,
    budget_s: float = 3.0,
    stages: bool = True,
    cache: EngineCache | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelBench:
    """Measure every candidate for each (threads, batch size), and the stage split of normal vs high-performance
    mode. Each configuration runs in its own process."""
    import tempfile

    cache = cache or EngineCache()
    result = ModelBench(source.name, weights_label(source), str(device))
    with tempfile.TemporaryDirectory(prefix="hpi-bench-") as tmp:
        image = stage_image(Path(tmp))
        for t in threads:
            cfg = HpiConfig(threads=t, allow_reduced_precision=allow_reduced_precision)
            for bs in batch_sizes:
                label = f"{source.name} threads={resolve_threads(t) if not device.is_gpu else '-'} batch={bs}"
                record = select(source, device, cfg, cache=cache, batch_size=bs, budget_s=budget_s,
                                progress=(lambda s, label=label: progress(f"{label} {s}")) if progress else None)
                run: dict[str, Any] = {"threads": record.threads, "batch_size": bs, "record": record}
                # The stage split is per image at batch 1 (what the preprocessing targets are stated for); at larger
                # batches the candidate table already gives throughput, and timing every stage of a large model at
                # batch 8 would take minutes.
                if stages and bs == 1 and source.spec.task in ("classification", "embedding"):
                    if progress:
                        progress(f"{label} stage split")
                    run["stages"] = _stage_split(source, device, record, image, bs, budget_s, cache)
                result.runs.append(run)
    return result


def _stage_split(source: ModelSource, device: Device, record: SelectionRecord, image: Path, bs: int,
                 budget_s: float, cache: EngineCache) -> dict[str, dict[str, Any]]:
    from hpi.backends.base import get_backend
    from hpi.select import BackendChoice, with_folding

    out = {}
    win = record.winner.candidate
    # High-performance mode as create_model(use_hpip=True) runs it: folded preprocessing where the backend can.
    hp = with_folding(BackendChoice(win.backend, get_backend(win.backend).make_config(win.config), "", "measured"),
                      source, HpiConfig())
    modes = {"high-performance": (win.backend, win.label, hp.config.to_dict(), True)}
    if record.normal is not None:
        normal = record.normal.candidate
        modes = {"normal": (normal.backend, normal.label, normal.config, False), **modes}
    for mode, (backend, label, config, fast) in modes.items():
        request = {"model_dir": str(source.directory), "device": str(device), "backend": backend, "config": config,
                   "cache_dir": str(cache.root), "image": str(image), "batch_size": bs,
                   "budget_s": max(1.0, budget_s / 2), "fast": fast}
        folded = " +folded" if config.get("fold_preprocess") else ""
        out[mode] = {"candidate": label + folded, **run_isolated("hpi.bench:measure_stages", request)}
    return out


# --------------------------------------------------------------------------------------------------------------
# Tables


def machine_description() -> str:
    info = cpu_info()
    return f"{info['model']}, {info['cores']} cores available, {platform.system()} {platform.machine()}, " \
           f"Python {platform.python_version()}"


def _published(model: str, device: Device) -> tuple[float | None, float | None]:
    try:
        from hpi.cards import get_card

        card = get_card(model)
    except (HpiError, ImportError):
        return None, None
    pair = card.latency.gpu_ms if device.is_gpu else card.latency.cpu_ms
    return pair.normal, pair.hpi


def summary_rows(benches: Sequence[ModelBench]) -> list[dict[str, Any]]:
    """One row per model x threads x batch: normal mode vs high-performance mode, with the seeds' figures."""
    rows = []
    for b in benches:
        pub_normal, pub_hpi = _published(b.model, parse_device(b.device))
        for run in b.runs:
            rec: SelectionRecord = run["record"]
            normal, win = rec.normal, rec.winner
            rows.append({
                "model": b.model,
                "weights": b.weights,
                "threads": run["threads"],
                "batch": run["batch_size"],
                "normal_p50_ms": normal.timing.p50_ms if normal and normal.timing else None,
                "hpi_p50_ms": win.timing.p50_ms,
                "hpi_p90_ms": win.timing.p90_ms,
                "hpi_p99_ms": win.timing.p99_ms,
                "hpi_backend": win.candidate.label,
                "speedup": rec.speedup,
                "published_normal_ms": pub_normal,
                "published_hpi_ms": pub_hpi,
                "published_speedup": (pub_normal / pub_hpi) if pub_normal and pub_hpi else None,
            })
    return rows


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_markdown(benches: Sequence[ModelBench], *, target: float | None = 1.5) -> str:
    lines = [f"Machine: {machine_description()}. Date: {time.strftime('%Y-%m-%d')}.", ""]
    lines += [
        "| Model | weights | threads | batch | normal mode p50 ms (Paddle fp32) | high-performance p50 / p90 / p99 ms "
        "| backend | speed-up | published CPU ms (normal / hp) | published speed-up | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary_rows(benches):
        needed = max(filter(None, [target, r["published_speedup"]]), default=None)
        verdict = "-"
        # The targets are stated for batch 1 at the machine's full thread count (2 here).
        if needed and r["speedup"] and r["batch"] == 1 and r["threads"] == cpu_count():
            verdict = "met" if r["speedup"] >= needed else f"missed by {needed / r['speedup']:.2f}x"
        lines.append(
            f"| {r['model']} | {r['weights']} | {_f(r['threads'])} | {r['batch']} | {_f(r['normal_p50_ms'])} "
            f"| {_f(r['hpi_p50_ms'])} / {_f(r['hpi_p90_ms'])} / {_f(r['hpi_p99_ms'])} | {r['hpi_backend']} "
            f"| {_f(r['speedup'])}x | {_f(r['published_normal_ms'])} / {_f(r['published_hpi_ms'])} "
            f"| {_f(r['published_speedup'])}x | {verdict} |"
        )
    for b in benches:
        for run in b.runs:
            rec: SelectionRecord = run["record"]
            lines += ["", f"#### {b.model}: every candidate (threads={_f(run['threads'])}, batch={run['batch_size']}, "
                      f"weights: {b.weights})", "",
                      "| candidate | status | p50 ms | p90 ms | p99 ms | items/s | rel. error | top-1 agree "
                      "| top-5 overlap | note |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for res in rec.results:
                t, a = res.timing, res.accuracy
                mark = "**winner**" if res.status == "winner" else res.status
                lines.append(
                    f"| {res.candidate.label} | {mark} | {_f(t and t.p50_ms)} | {_f(t and t.p90_ms)} "
                    f"| {_f(t and t.p99_ms)} | {_f(t and t.throughput, 1)} | {_f(a and a.max_rel_error, 5)} "
                    f"| {_f(a and a.top1_agreement)} | {_f(a and a.top5_overlap)} | {res.reason} |"
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


def format_csv(benches: Sequence[ModelBench]) -> str:
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


def format_json(benches: Sequence[ModelBench]) -> str:
    return json.dumps({"machine": machine_description(), "date": time.strftime("%Y-%m-%d"),
                       "summary": summary_rows(benches), "models": [b.to_dict() for b in benches]}, indent=2)


def load_benches(path: str | Path) -> list[ModelBench]:
    """The benches of a ``format_json`` file (to re-plot or re-format a run without measuring again)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [ModelBench(m["model"], m["weights"], m["device"],
                       [{**r, "record": SelectionRecord.from_dict(r["record"])} for r in m["runs"]])
            for m in data["models"]]


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


# --------------------------------------------------------------------------------------------------------------
# export and eval


def related_entries(cache: EngineCache, model_hash: str) -> list:
    """Cache entries derived from a model: its ONNX export, and everything built from that, transitively."""
    entries = cache.entries()
    keys, out = {model_hash}, []
    changed = True
    while changed:
        changed = False
        for e in entries:
            if e in out:
                continue
            if any(str(v) in keys for v in e.parts.values()):
                out.append(e)
                keys.add(e.key)
                changed = True
    return out


def build_engines(source: ModelSource, device: Device, hpi_config: HpiConfig, cache: EngineCache, *,
                  backends: Sequence[str], report: Callable[[str], None], progress: Callable[[str], None]) -> None:
    """Build (through the cache) every candidate engine of the named backends, without measuring."""
    from hpi.backends.base import get_backend
    from hpi.selection import candidates

    wanted = {get_backend(name).name for name in backends}  # unknown names raise, listing the known ones
    cands, skipped = candidates(source, device, hpi_config)
    for cand in (c for c in cands if c.backend in wanted):
        progress(f"building {cand.label}")
        try:
            get_backend(cand.backend).engine(source, device, cand.config, cache).load().close()
            report(f"{cand.label}: built")
        except HpiError as exc:
            report(f"{cand.label}: failed: {exc}")
    for name in sorted(wanted & set(skipped)):
        report(f"{name}: unavailable: {skipped[name]}")


def read_dataset(directory: str | Path) -> tuple[list[tuple[Path, int]], list[str] | None]:
    """PaddleX's classification layout: ``val.txt`` of ``path label`` lines, optional ``label.txt`` of
    ``id name`` lines; paths are relative to the dataset directory."""
    root = Path(directory)
    val = root / "val.txt"
    if not val.is_file():
        raise InvalidInputError(f"{root}: val.txt is missing (PaddleX classification layout)")
    items = []
    for n, line in enumerate(val.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise InvalidInputError(f"{val}:{n}: expected 'path label', got {line!r}")
        path = root / parts[0]
        if not path.is_file():
            raise InvalidInputError(f"{val}:{n}: {path} does not exist")
        items.append((path, int(parts[1])))
    if not items:
        raise InvalidInputError(f"{val}: no samples")
    names = None
    label_file = root / "label.txt"
    if label_file.is_file():
        names = [ln.split(maxsplit=1)[1] if len(ln.split(maxsplit=1)) == 2 else ln
                 for ln in label_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return items, names


@dataclass(frozen=True)
class EvalReport:
    model: str
    samples: int
    normal: dict[str, Any]  # {"backend", "top1", "top5"}
    high_performance: dict[str, Any]
    top1_agreement: float  # fraction of samples where both modes give the same top-1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(model: str, dataset: str | Path, *, model_dir: str | None = None, device: str | None = "cpu",
             hpi_config: dict[str, Any] | None = None, batch_size: int = 8, cache_dir: str | None = None) -> EvalReport:
    """Top-1 / top-5 of normal mode and high-performance mode side by side on a labelled dataset."""
    from hpi.predictor import create_model

    items, _ = read_dataset(dataset)
    paths, labels = [str(p) for p, _ in items], np.array([label for _, label in items])
    modes = {"normal": False, "high_performance": True}
    preds: dict[str, list[list[int]]] = {}
    summary: dict[str, dict[str, Any]] = {}
    source_dir = model_dir or str(resolve_source(model).directory)
    for mode, hpip in modes.items():
        predictor = create_model(model, source_dir, device=device, use_hpip=hpip, hpi_config=hpi_config,
                                 cache_dir=cache_dir, topk=5)
        ids = [r["class_ids"] for r in predictor.predict(paths, batch_size=batch_size)]
        preds[mode] = ids
        top1 = float(np.mean([i[0] == y for i, y in zip(ids, labels)]))
        top5 = float(np.mean([y in i[:5] for i, y in zip(ids, labels)]))
        summary[mode] = {"backend": predictor.engine.describe(), "top1": top1, "top5": top5}
        predictor.close()
    agree = float(np.mean([a[0] == b[0] for a, b in zip(preds["normal"], preds["high_performance"])]))
    return EvalReport(model, len(items), summary["normal"], summary["high_performance"], agree)


# --------------------------------------------------------------------------------------------------------------
# CLI


def _progress_printer() -> Callable[[str], None]:
    start = time.perf_counter()

    def show(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return show


def _models_arg(args: argparse.Namespace) -> list[str]:
    if args.models == "core":
        from hpi.cards import core_models

        return [c.name for c in core_models()]
    if args.models:
        return [m.strip() for m in args.models.split(",") if m.strip()]
    return [args.model or DEFAULT_MODEL]


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.pipeline:
        from hpi.pipelines.bench import bench_pipeline

        text = bench_pipeline(args.pipeline, device=args.device, use_hpip=args.use_hpip, index=args.index,
                              gallery_size=args.gallery_size, budget_s=args.budget, cache_dir=args.cache_dir)
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        print(text)
        return 0
    device = parse_device(args.device)
    show = _progress_printer()
    cache = EngineCache(args.cache_dir)
    benches = []
    models = _models_arg(args)
    if args.model_dir and len(models) > 1:
        raise InvalidConfigError("--model-dir goes with a single --model")
    for i, name in enumerate(models):
        show(f"model {i + 1}/{len(models)}: {name}")
        source = resolve_source(name, args.model_dir, notify=show)
        benches.append(bench_model(source, device, batch_sizes=args.batch_sizes, threads=args.threads or [None],
                                   allow_reduced_precision=not args.fp32_only, budget_s=args.budget,
                                   stages=not args.no_stages, cache=cache, progress=show))
    text = {"md": format_markdown, "csv": format_csv, "json": format_json}[args.format](benches)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        show(f"wrote {args.output}")
    print(text)
    if args.plot:
        show(f"wrote {plot(benches, args.plot)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format == "triton":
        from hpi.scaleout.cli import run_triton_export

        return run_triton_export(args)
    device = parse_device(args.device)
    cache = EngineCache(args.cache_dir)
    show = _progress_printer()
    source = resolve_source(args.model, args.model_dir, notify=show)
    cfg = HpiConfig(threads=args.threads, allow_reduced_precision=not args.fp32_only)
    if args.backends:
        build_engines(source, device, cfg, cache, backends=args.backends.split(","), report=print, progress=show)
    else:
        record = cached_selection(source, device, cfg, cache=cache, batch_size=1,
                                  progress=lambda s: show(f"measuring {s}"))
        for res in record.results:
            t = f"p50 {res.timing.p50_ms:.2f} ms" if res.timing else ""
            print(f"{res.candidate.label:28} {res.status:11} {t:16} {res.reason}")
        print(f"high-performance mode for {source.name} on {device}: {record.winner.candidate.label} "
              f"({record.reason()})")
    print(f"engine cache: {cache.root}")
    for e in related_entries(cache, source.content_hash):
        print(f"  {e.kind:16} {e.size_bytes / 1e6:9.2f} MB  {e.path}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    cfg = {"threads": args.threads} if args.threads else None
    report = evaluate(args.model, args.dataset, model_dir=args.model_dir, device=args.device, hpi_config=cfg,
                      batch_size=args.batch_size, cache_dir=args.cache_dir)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"{report.model} on {args.dataset} ({report.samples} samples)")
    print("| mode | backend | top-1 | top-5 |\n|---|---|---|---|")
    for mode, r in (("normal", report.normal), ("high-performance", report.high_performance)):
        print(f"| {mode} | {r['backend']} | {r['top1']:.4f} | {r['top5']:.4f} |")
    print(f"top-1 agreement between the modes: {report.top1_agreement:.4f}")
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="latency table: normal vs high-performance mode, every candidate")
    p.add_argument("--model", help=f"model name (default {DEFAULT_MODEL}); built from the zoo if not in the store")
    p.add_argument("--models", help="'core' (the nine core models of seed 002) or a comma-separated list")
    p.add_argument("--model-dir", help="a PaddleX inference directory for --model")
    p.add_argument("--pipeline", help="time a pipeline's stages instead (PP-ShiTuV2: detect, embed, search)")
    p.add_argument("--index", help="with --pipeline: a saved index to search (default: built from the samples)")
    p.add_argument("--gallery-size", type=int, help="with --pipeline: pad the index to this many vectors")
    p.add_argument("--use-hpip", action="store_true", help="with --pipeline: high-performance mode per sub-model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-sizes", type=_int_list, default=[1], help="e.g. 1,8")
    p.add_argument("--threads", type=_int_list, default=None, help="e.g. 1,2 (default: the machine's cores)")
    p.add_argument("--format", choices=["md", "csv", "json"], default="md")
    p.add_argument("--output", help="also write the table to this file")
    p.add_argument("--plot", help="write a latency and throughput chart (PNG)")
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timing per candidate (after warm-up)")
    p.add_argument("--fp32-only", action="store_true", help="no reduced-precision candidates")
    p.add_argument("--no-stages", action="store_true", help="skip the decode/preprocess/inference split")
    p.add_argument("--cache-dir")
    p.set_defaults(func=_cmd_bench)

    p = subparsers.add_parser("export", help="build every engine ahead of time and run selection, or write a "
                                             "Triton model repository (--format triton)")
    p.add_argument("--model", required=True)
    p.add_argument("--model-dir")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backends", help="only build these (comma-separated); no selection")
    p.add_argument("--threads", type=int)
    p.add_argument("--fp32-only", action="store_true")
    p.add_argument("--cache-dir")
    from hpi.scaleout.cli import add_export_options

    add_export_options(p)
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser("eval", help="top-1/top-5 of normal and high-performance mode on a labelled dataset")
    p.add_argument("--model", required=True)
    p.add_argument("--model-dir")
    p.add_argument("--dataset", required=True, help="PaddleX classification layout: val.txt (+ label.txt)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--cache-dir")
    p.set_defaults(func=_cmd_eval)


__all__ = ["Timing", "bench_model", "evaluate", "format_markdown", "register_cli", "resolve_source"]
