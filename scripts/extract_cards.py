"""Write hpi/data/model_cards/*.yaml from the seed documents.

Sources:
  * seed 002 (HTML tables): the nine core models (first table) and all 80 classification models (second table):
    Top-1, GPU and CPU latency as "normal / high-performance", model size. Families are read from the
    description cells, whose ``rowspan`` covers one family's rows.
  * seed 000 (Markdown table): the older edition's single GPU / CPU latency per model ("-" = not given).
  * seed 004 (Markdown tables): PP-ShiTuV2_det (mAP, mAP@0.5) and PP-ShiTuV2_rec (Recall@1).
  * preprocessing defaults: PaddleX's model configs (``paddlex/repo_apis/PaddleClas_api/configs/<model>.yaml``
    ``Infer.transforms`` and ``PaddleDetection_api/configs/PP-ShiTuV2_det.yaml`` ``TestReader``), transcribed
    in PREPROCESSING below because the seeds do not give them.

Cards that already exist keep their measured fields (buildable, params, flops, size_ratio, fidelity_note),
which scripts/update_card_fidelity.py writes. The script checks the seeds against each other (core table vs
full table, 000 vs 002 for Top-1 and size) and prints what differs.

Usage: python scripts/extract_cards.py [--seeds /work/shared/seeds] [--out hpi/data/model_cards] [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpi.cards import (  # noqa: E402
    CARD_SUFFIX,
    Latency,
    LatencyPair,
    LegacyLatency,
    Metrics,
    ModelCard,
    Preprocessing,
    dump_card,
    parse_card,
)

SEED_002 = "002_a6379fd805522788.txt"
SEED_000 = "000_95e866b37c93c94b.txt"
SEED_004 = "004_31586f571366f688.txt"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Family of each model, by name prefix (checked against the seed's family groups).
FAMILY_PREFIXES = (
    ("CLIP_vit_", "CLIP"),
    ("ConvNeXt_", "ConvNeXt"),
    ("FasterNet-", "FasterNet"),
    ("MobileNetV1_", "MobileNetV1"),
    ("MobileNetV2_", "MobileNetV2"),
    ("MobileNetV3_", "MobileNetV3"),
    ("MobileNetV4_", "MobileNetV4"),
    ("PP-HGNetV2-", "PP-HGNetV2"),
    ("PP-HGNet_", "PP-HGNet"),
    ("PP-LCNetV2_", "PP-LCNetV2"),
    ("PP-LCNet_", "PP-LCNet"),
    ("ResNet", "ResNet"),
    ("StarNet-", "StarNet"),
    ("SwinTransformer_", "SwinTransformer"),
    ("PP-ShiTuV2_", "PP-ShiTuV2"),
)

PADDLEX_CLS_CONFIG = "PaddleX paddlex/repo_apis/PaddleClas_api/configs/{name}.yaml (Infer.transforms)"


@dataclass(frozen=True)
class Prep:
    """One preprocessing default as PaddleX's config states it."""

    resize_short: int | None = 256
    crop: int | None = 224
    interpolation: str = "LINEAR"  # ResizeImage.interpolation (absent = bilinear)
    backend: str = "cv2"  # ResizeImage.backend (absent = OpenCV)
    resize_to: tuple[int, int] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    source: str = PADDLEX_CLS_CONFIG


# PaddleX's Infer.transforms, by model-name regex; the first match wins. Every classification config uses
# ImageNet mean/std, CLIP included (PaddleX's CLIP classifiers are fine-tuned with ImageNet statistics).
# PaddleX 3 applies ResizeImage's interpolation and backend as written (earlier 3.0 betas resized bilinearly
# with OpenCV whatever the config said).
BICUBIC_PIL = {"interpolation": "BICUBIC", "backend": "pil"}
PREPROCESSING: tuple[tuple[str, Prep], ...] = (
    (r"ConvNeXt_.*_384$", Prep(resize_short=384, crop=384, **BICUBIC_PIL)),
    (r"ConvNeXt_", Prep(**BICUBIC_PIL)),
    (r"SwinTransformer_.*_384$", Prep(resize_short=438, crop=384, **BICUBIC_PIL)),
    (r"SwinTransformer_", Prep(**BICUBIC_PIL)),
    (r"PP-HGNet_(base|small)$", Prep(resize_short=236, **BICUBIC_PIL)),
    (r"PP-HGNet_tiny$", Prep(resize_short=232, **BICUBIC_PIL)),
    (r"PP-HGNetV2-", Prep(resize_short=232, **BICUBIC_PIL)),
    (r"MobileNetV4_hybrid_large$", Prep(resize_short=448, crop=448)),
    (r"MobileNetV4_hybrid_medium$", Prep(resize_short=256, crop=256)),
    (r"StarNet-", Prep(resize_short=224, crop=224)),
    (
        r"PP-ShiTuV2_rec$",
        Prep(
            resize_short=None,
            crop=None,
            resize_to=(224, 224),
            source="PaddleX paddlex/repo_apis/PaddleClas_api/configs/PP-ShiTuV2_rec.yaml (Eval ResizeImage, cv2)",
        ),
    ),
    (
        r"PP-ShiTuV2_det$",
        Prep(
            resize_short=None,
            crop=None,
            resize_to=(640, 640),
            interpolation="BICUBIC",  # Resize interp: 2 (cv2.INTER_CUBIC)
            source="PaddleX paddlex/repo_apis/PaddleDetection_api/configs/PP-ShiTuV2_det.yaml (TestReader)",
        ),
    ),
    (r".", Prep()),  # CLIP, FasterNet, MobileNetV1-V4 conv, PP-LCNet(V2), ResNet: resize_short 256, crop 224
)


@dataclass
class SeedRow:
    """One model's figures from a seed table, still as printed."""

    name: str
    cells: list[str]
    family_group: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


class _TableParser(HTMLParser):
    """Collects every <table> as rows of cell texts, tolerating unclosed <tr> tags; records rowspans."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[tuple[list[str], list[int]]]] = []
        self._depth = 0
        self._row: list[str] | None = None
        self._spans: list[int] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._depth += 1
            self.tables.append([])
        elif tag == "tr" and self._depth:
            self._end_row()
            self._row, self._spans = [], []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            self._spans.append(int(dict(attrs).get("rowspan") or 1))
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr":
            self._end_row()
        elif tag == "table" and self._depth:
            self._end_row()
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def _end_row(self) -> None:
        if self._row:
            self.tables[-1].append((self._row, self._spans))
        self._row, self._spans = None, []


def parse_002(text: str) -> tuple[dict[str, SeedRow], dict[str, SeedRow]]:
    """(core table rows, full table rows) by model name."""
    parser = _TableParser()
    parser.feed(text)
    model_tables = [
        t for t in parser.tables if t and t[0][0] and t[0][0][0] == "Model" and "Top" in t[0][0][2]
    ]
    if len(model_tables) != 2:
        raise SystemExit(f"seed 002: expected 2 model tables, found {len(model_tables)}")
    core, full = ({}, {})
    for target, table in zip((core, full), model_tables, strict=True):
        header = table[0][0]
        group, left_in_group = 0, 0
        for cells, spans in table[1:]:
            row = SeedRow(name=cells[0].strip(), cells=cells[:6])
            if len(cells) >= 7 and "Description" in header:  # a description cell opens a family group
                group, left_in_group = group + 1, spans[6]
            if "Description" in header:
                if left_in_group <= 0:
                    raise SystemExit(f"seed 002: row {row.name} is outside any family group")
                row.family_group = group
                left_in_group -= 1
            target[row.name] = row
    return core, full


def _markdown_cells(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") else body
    return [c.strip() for c in body.split("|")]


def parse_000(text: str, names: set[str]) -> dict[str, SeedRow]:
    """Rows of the older edition's model table (name, top1, gpu ms, cpu ms, size) for known model names."""
    rows: dict[str, SeedRow] = {}
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| Model | Top-1"))
    for line in lines[start + 2 :]:
        cells = _markdown_cells(line)
        if not cells or cells[0] not in names:
            break
        rows[cells[0]] = SeedRow(name=cells[0], cells=cells[:5])
    return rows


def parse_004(text: str) -> dict[str, SeedRow]:
    """PP-ShiTuV2_det and PP-ShiTuV2_rec rows of seed 004.

    Both tables label their first latency column "CPU Inference Time" twice; the first of the two is the GPU
    column (same column order as seed 002, and the note under the tables gives GPU times on a T4).
    """
    rows: dict[str, SeedRow] = {}
    for line in text.splitlines():
        cells = _markdown_cells(line)
        if cells and cells[0] == "PP-ShiTuV2_det":
            # Model | mAP(0.5:0.95) | mAP(0.5) | GPU pair | CPU pair | size | description
            rows["PP-ShiTuV2_det"] = SeedRow(
                name=cells[0],
                cells=[cells[0], cells[1], cells[3], cells[4], cells[5]],
                extra={"map_50": cells[2]},
            )
        elif cells and cells[0] == "PP-ShiTuV2_rec":
            # Model | Recall@1 | GPU pair | CPU pair | size | description
            rows["PP-ShiTuV2_rec"] = SeedRow(name=cells[0], cells=cells[:5])
    missing = {"PP-ShiTuV2_det", "PP-ShiTuV2_rec"} - set(rows)
    if missing:
        raise SystemExit(f"seed 004: rows not found: {sorted(missing)}")
    return rows


def number(text: str, what: str) -> float | None:
    """A printed figure as a float; "-" or an empty cell is None."""
    text = text.strip()
    if text in ("", "-"):
        return None
    try:
        return float(text)
    except ValueError:
        raise SystemExit(f"{what}: cannot read {text!r} as a number") from None


def pair(text: str, what: str) -> LatencyPair:
    """ "12.84 / 2.82" as (normal, hpi)."""
    parts = [p.strip() for p in text.split("/")]
    if len(parts) != 2:
        raise SystemExit(f"{what}: expected 'normal / high-performance', got {text!r}")
    return LatencyPair(normal=number(parts[0], what), hpi=number(parts[1], what))


def size_mb(text: str, what: str) -> float | None:
    """ "306.5 M" -> 306.5, "1.04 G" -> 1040.0 (1 G = 1000 M), "27.54" (no unit) -> 27.54."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([MG]?)\s*", text)
    if not m:
        raise SystemExit(f"{what}: cannot read model size {text!r}")
    value = float(m.group(1)) * (1000.0 if m.group(2) == "G" else 1.0)
    return round(value, 3)


def family_of(name: str) -> str:
    for prefix, family in FAMILY_PREFIXES:
        if name.startswith(prefix):
            return family
    raise SystemExit(f"no family prefix matches {name!r}")


def preprocessing_of(name: str) -> Preprocessing:
    prep = next(p for pattern, p in PREPROCESSING if re.match(pattern, name))
    return Preprocessing(
        resize_short=prep.resize_short,
        resize_to=prep.resize_to,
        crop=prep.crop,
        interpolation=prep.interpolation,
        resize_backend=prep.backend,
        mean=prep.mean,
        std=prep.std,
        channel_order="RGB",
        source=prep.source.format(name=name),
    )


def input_size_of(prep: Preprocessing) -> int:
    if prep.crop is not None:
        return prep.crop
    assert prep.resize_to is not None and prep.resize_to[0] == prep.resize_to[1]
    return prep.resize_to[0]


def build_cards(seeds: Path) -> tuple[list[ModelCard], list[str]]:
    """All cards from the seeds, and the list of cross-check findings."""
    findings: list[str] = []
    core, full = parse_002((seeds / SEED_002).read_text(encoding="utf-8"))
    legacy = parse_000((seeds / SEED_000).read_text(encoding="utf-8"), set(full))
    shitu = parse_004((seeds / SEED_004).read_text(encoding="utf-8"))
    if len(full) != 80 or len(core) != 9:
        raise SystemExit(f"seed 002: expected 80 models and 9 core models, got {len(full)} and {len(core)}")
    for name, row in core.items():
        if name not in full:
            raise SystemExit(f"seed 002: core model {name} missing from the full table")
        if row.cells[2:6] != full[name].cells[2:6]:
            findings.append(
                f"002 core vs full table differ for {name}: {row.cells[2:6]} vs {full[name].cells[2:6]}"
            )
    groups: dict[int, set[str]] = {}
    for name, row in full.items():
        groups.setdefault(row.family_group or 0, set()).add(family_of(name))
    for group, families in groups.items():
        if len(families) != 1:
            raise SystemExit(f"seed 002: description group {group} mixes families {sorted(families)}")
    for name in sorted(set(full) - set(legacy)):
        findings.append(f"000 does not list {name}")
    for name, old in legacy.items():
        new = full[name]
        if number(old.cells[1], name) != number(new.cells[2], name):
            findings.append(f"Top-1 of {name}: 000 {old.cells[1]} vs 002 {new.cells[2]} (002 used)")
        if old.cells[4] != new.cells[5]:
            findings.append(f"size of {name}: 000 {old.cells[4]!r} vs 002 {new.cells[5]!r} (002 used)")
        if number(old.cells[3], name) is None:
            findings.append(f"000 gives no CPU latency for {name} ('-'): legacy cpu_ms is null")

    cards: list[ModelCard] = []
    for name, row in sorted(full.items()):
        _, _, top1, gpu, cpu, size = row.cells
        prep = preprocessing_of(name)
        old = legacy.get(name)
        cards.append(
            ModelCard(
                name=name,
                family=family_of(name),
                task="classification",
                core=name in core,
                input_size=input_size_of(prep),
                preprocessing=prep,
                metrics=Metrics(top1=number(top1, name), recall_at_1=None, map=None, map_50=None),
                latency=Latency(gpu_ms=pair(gpu, f"{name} GPU"), cpu_ms=pair(cpu, f"{name} CPU")),
                legacy_latency=None
                if old is None
                else LegacyLatency(gpu_ms=number(old.cells[2], name), cpu_ms=number(old.cells[3], name)),
                size_mb=size_mb(size, name),
                size_published=size,
                test_env="seed-002",
                buildable=False,
                params=None,
                flops=None,
                size_ratio=None,
                fidelity_note=None,
            )
        )
    for name, row in sorted(shitu.items()):
        _, metric, gpu, cpu, size = row.cells
        prep = preprocessing_of(name)
        is_det = name.endswith("_det")
        if is_det and not re.search(r"[MG]\s*$", size):
            findings.append(f"004 prints the size of {name} without a unit ({size!r}): read as MB")
        cards.append(
            ModelCard(
                name=name,
                family=family_of(name),
                task="detection" if is_det else "embedding",
                core=False,
                input_size=input_size_of(prep),
                preprocessing=prep,
                metrics=Metrics(
                    top1=None,
                    recall_at_1=None if is_det else number(metric, name),
                    map=number(metric, name) if is_det else None,
                    map_50=number(row.extra["map_50"], name) if is_det else None,
                ),
                latency=Latency(gpu_ms=pair(gpu, f"{name} GPU"), cpu_ms=pair(cpu, f"{name} CPU")),
                legacy_latency=None,
                size_mb=size_mb(size, name),
                size_published=size,
                test_env="seed-004",
                buildable=False,
                params=None,
                flops=None,
                size_ratio=None,
                fidelity_note=None,
            )
        )
    return cards, findings


MEASURED_FIELDS = ("buildable", "params", "flops", "size_ratio", "fidelity_note")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=Path, default=Path("/work/shared/seeds"))
    ap.add_argument("--out", type=Path, default=REPO / "hpi" / "data" / "model_cards")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a card would change")
    args = ap.parse_args(argv)

    cards, findings = build_cards(args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    changed = []
    for card in cards:
        path = args.out / f"{card.name}{CARD_SUFFIX}"
        if (
            path.exists()
        ):  # keep what update_card_fidelity.py measured (read raw: the schema may have changed)
            old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            card = replace(card, **{f: old[f] for f in MEASURED_FIELDS if f in old})
        text = dump_card(card)
        parse_card(text, where=str(path))  # what we write must load
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            changed.append(card.name)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    stale = sorted(p.name for p in args.out.glob(f"*{CARD_SUFFIX}") if p.stem not in {c.name for c in cards})
    print(
        f"{len(cards)} cards; {len(changed)} {'would change' if args.check else 'written'}: {', '.join(changed)}"
    )
    if stale:
        print(f"cards with no seed row (left alone): {', '.join(stale)}")
    for finding in findings:
        print(f"note: {finding}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
