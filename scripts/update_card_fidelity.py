"""Fill params, flops, buildable and size_ratio into the model cards from the networks hpi.zoo builds.

For every card whose model a zoo family module defines:
  * params: counted from parameter shapes of a build under ``paddle.LazyGuard`` (no weights are allocated, so
    even CLIP-L costs nothing), BatchNorm running statistics included (PaddleClas' convention, and what the
    published weight files store);
  * flops: ``hpi.zoo.nets.fidelity.count_flops`` on one input at the card's input size (needs a real build and a
    forward pass; skipped above --flops-max-params);
  * size_ratio: published size in MB / (params * 4 bytes / 1e6); a ratio far from the median gets a
    fidelity_note saying how far, plus the known cause where there is one (KNOWN_CAUSES).

Family modules are imported one by one, so a module that does not exist yet, or fails to import, is skipped
and reported instead of stopping the run. Cards of models no importable module defines are left as they are.

Usage: python scripts/update_card_fidelity.py [--only NAME ...] [--no-flops] [--flops-max-params N] [--dry-run]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpi.cards import CARD_SUFFIX, ModelCard, dump_card, parse_card  # noqa: E402
from hpi.zoo.catalogue import FAMILY_MODULES, ZooModel, zoo_models  # noqa: E402

CARDS_DIR = REPO / "hpi" / "data" / "model_cards"

# A size_ratio this far (relative) from the median of all measured cards gets a note.
OUTLIER_TOLERANCE = 0.05

# Why a model's published size departs from its FP32 weights, where that is known. Keyed by model name.
KNOWN_CAUSES: dict[str, str] = {}

# Caveats on the FLOP count that hold whatever the size ratio, by model-name regex.
FLOP_CAVEATS: tuple[tuple[str, str], ...] = (
    (
        r"CLIP_vit_|SwinTransformer_|MobileNetV4_hybrid_",
        "flops leaves out the attention matmuls (q @ k^T, attn @ v), as paddle.flops and PaddleClas' tables do",
    ),
    (
        r"PP-ShiTuV2_det$",
        "flops covers backbone, neck and head convolutions; box decoding and NMS count zero",
    ),
)


def lazy_param_count(model: ZooModel) -> int:
    """Parameter count from shapes, weights never allocated; falls back to a real build if lazy building fails."""
    import paddle

    from hpi.zoo.nets.fidelity import count_params

    try:
        with paddle.LazyGuard():
            net = model.build()
    except Exception:  # some builds compute at construction time; those need real tensors
        net = model.build()
    return count_params(net, include_bn_stats=True)


def flop_count(model: ZooModel, input_size: int) -> int:
    import paddle

    from hpi.zoo.nets.fidelity import count_flops

    paddle.seed(0)
    net = model.build()
    if (
        model.task == "detection"
    ):  # PaddleDetection graphs also take scale_factor; count_flops feeds one input
        detector = net

        class WithScaleFactor(paddle.nn.Layer):
            def __init__(self) -> None:
                super().__init__()
                self.detector = detector

            def forward(self, image: paddle.Tensor) -> Any:
                return self.detector(image, paddle.ones([image.shape[0], 2], dtype="float32"))

        net = WithScaleFactor()
    return count_flops(net, input_size)


def size_ratio(card: ModelCard, params: int) -> float | None:
    if card.size_mb is None or params <= 0:
        return None
    return round(card.size_mb / (params * 4 / 1e6), 4)


def annotate(cards: dict[str, ModelCard]) -> dict[str, ModelCard]:
    """Set fidelity_note on every measured card: outliers of size_ratio (vs the median) say how and why."""
    ratios = [c.size_ratio for c in cards.values() if c.size_ratio is not None]
    if not ratios:
        return cards
    median = statistics.median(ratios)
    out = {}
    for name, card in cards.items():
        note = None
        if card.size_ratio is not None:
            off = card.size_ratio / median - 1
            if abs(off) > OUTLIER_TOLERANCE:
                note = (
                    f"size_ratio {card.size_ratio:.3f} is {off:+.0%} off the median {median:.3f} of all measured "
                    f"cards"
                )
                cause = KNOWN_CAUSES.get(name)
                note += (
                    f": {cause}"
                    if cause
                    else "; cause not established (the seeds do not say what the size counts)"
                )
            elif name in KNOWN_CAUSES:
                note = KNOWN_CAUSES[name]
        caveats = [
            text for pattern, text in FLOP_CAVEATS if re.match(pattern, name) and card.flops is not None
        ]
        note = "; ".join([n for n in (note, *caveats) if n]) or None
        out[name] = replace(card, fidelity_note=note) if card.size_ratio is not None else card
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cards", type=Path, default=CARDS_DIR)
    ap.add_argument("--only", nargs="*", default=None, help="model names to measure (default: all buildable)")
    ap.add_argument("--no-flops", action="store_true", help="count parameters only")
    ap.add_argument(
        "--flops-max-params",
        type=float,
        default=400e6,
        help="skip the FLOP count (a real build and forward pass) above this many parameters",
    )
    ap.add_argument("--dry-run", action="store_true", help="report, write nothing")
    args = ap.parse_args(argv)

    zoo = zoo_models()
    print(f"zoo: {len(zoo)} models from {len(FAMILY_MODULES)} family modules")

    paths = {p.stem: p for p in sorted(args.cards.glob(f"*{CARD_SUFFIX}"))}
    cards = {name: parse_card(p.read_text(encoding="utf-8"), where=str(p)) for name, p in paths.items()}

    targets = [n for n in cards if n in zoo and (args.only is None or n in args.only)]
    updated: dict[str, ModelCard] = dict(cards)
    for name in targets:
        card, model = cards[name], zoo[name]
        t0 = time.perf_counter()
        try:
            params = lazy_param_count(model)
        except Exception as exc:
            print(f"{name}: build failed ({type(exc).__name__}: {exc}); card left as it was")
            continue
        flops: Any = card.flops
        if not args.no_flops and params <= args.flops_max_params:
            try:
                flops = flop_count(model, card.input_size)
            except Exception as exc:
                print(f"{name}: FLOP count failed ({type(exc).__name__}: {exc}); flops left as it was")
        updated[name] = replace(
            card, buildable=True, params=params, flops=flops, size_ratio=size_ratio(card, params)
        )
        flops_txt = "-" if flops is None else f"{flops / 1e9:.3f} G"
        print(
            f"{name}: params {params / 1e6:.3f} M, flops {flops_txt}, size_ratio {updated[name].size_ratio}"
            f" ({time.perf_counter() - t0:.1f} s)"
        )

    updated = annotate(updated)
    written = []
    for name, card in updated.items():
        text = dump_card(card)
        parse_card(text, where=str(paths[name]))
        if text != paths[name].read_text(encoding="utf-8"):
            written.append(name)
            if not args.dry_run:
                paths[name].write_text(text, encoding="utf-8")
    for name in written:
        if updated[name].fidelity_note:
            print(f"note {name}: {updated[name].fidelity_note}")
    unbuilt = sorted(n for n, c in updated.items() if not c.buildable)
    print(
        f"{'would update' if args.dry_run else 'updated'} {len(written)} cards; not buildable yet: {len(unbuilt)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
