"""Preprocessing benchmark: PaddleX's per-image op chain against hpi's fused kernel, side by side in one run.

Targets (issue "Fused preprocessing"), on a 500x375 JPEG to 224x224 (resize_short 256, crop 224, ImageNet
normalisation, CHW):

* after decode: fused at least 3x faster per image than PaddleX's chain, at batch 1 and batch 32;
* including decode: at least 1.5x faster;
* end to end (JPEG bytes to top-5, PP-LCNet_x1_0, 2 threads) at least 2.5x faster than PaddleX's normal mode:
  needs the predictor and backends, reported as pending here until they land.

Method: every round times each case's baseline and fused variant back to back (the order alternates between
rounds), so both see the same machine load; per-image medians and p10/p90 over rounds are reported with the
ratio of medians. The machine is shared: load average is recorded at start and end.

Run: ``python benchmarks/preprocess_bench.py [--rounds 15] [--threads 2]``; writes
``benchmarks/results/preprocess.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpi.preprocess.fused import FusedPreprocessor  # noqa: E402
from hpi.preprocess.graph import ResizeCropU8  # noqa: E402
from hpi.preprocess.spec import PreprocessSpec  # noqa: E402

PADDLEX_CLS_OPS = [
    {"ResizeImage": {"resize_short": 256}},
    {"CropImage": {"size": 224}},
    {"NormalizeImage": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": 1 / 255, "order": ""}},
    {"ToCHWImage": None},
]


# -- PaddleX's chain, op by op as its classification predictor runs it (each op maps over the batch list) -------


class PaddleXRead:
    """ReadImage(format="RGB"): cv2 decode (imdecode here, imread from a path in PaddleX) then BGR to RGB."""

    def __call__(self, blobs: list[bytes]) -> list[np.ndarray]:
        out = []
        for blob in blobs:
            bgr = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return out


class PaddleXResizeByShort:
    def __init__(self, short: int) -> None:
        self.short = short

    def __call__(self, imgs: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for img in imgs:
            h, w = img.shape[:2]
            scale = self.short / min(h, w)
            out.append(cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR))
        return out


class PaddleXCrop:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, imgs: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for img in imgs:
            h, w = img.shape[:2]
            x1, y1 = max(0, (w - self.size) // 2), max(0, (h - self.size) // 2)
            out.append(img[y1 : min(h, y1 + self.size), x1 : min(w, x1 + self.size)])
        return out


class PaddleXNormalize:
    """Split the channels, cast each to float32, scale and shift in place, merge back."""

    def __init__(self, scale: float, mean: list[float], std: list[float]) -> None:
        self.alpha = [scale / s for s in std]
        self.beta = [-m / s for m, s in zip(mean, std)]

    def __call__(self, imgs: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for img in imgs:
            planes = list(cv2.split(img))
            for c in range(img.shape[2]):
                planes[c] = planes[c].astype(np.float32)
                planes[c] *= self.alpha[c]
                planes[c] += self.beta[c]
            out.append(cv2.merge(planes))
        return out


class PaddleXChain:
    def __init__(self) -> None:
        norm = PADDLEX_CLS_OPS[2]["NormalizeImage"]
        self.read = PaddleXRead()
        self.ops = [PaddleXResizeByShort(256), PaddleXCrop(224), PaddleXNormalize(norm["scale"], norm["mean"], norm["std"])]

    def after_decode(self, imgs: list[np.ndarray]) -> np.ndarray:
        for op in self.ops:
            imgs = op(imgs)
        chw = [img.transpose((2, 0, 1)) for img in imgs]  # ToCHWImage
        return np.stack(chw, axis=0).astype(np.float32, copy=False)  # ToBatch

    def from_bytes(self, blobs: list[bytes]) -> np.ndarray:
        return self.after_decode(self.read(blobs))


# -- measurement -------------------------------------------------------------------------------------------------


def per_image_us(fn: Callable[[], object], iterations: int, batch: int) -> tuple[float, float]:
    """(wall, process CPU) microseconds per image; CPU time is what the work costs whatever else runs."""
    cpu0, wall0 = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(iterations):
        fn()
    wall, cpu = time.perf_counter_ns() - wall0, time.process_time_ns() - cpu0
    scale = iterations * batch * 1000.0
    return wall / scale, cpu / scale


def summarise(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=10) if len(samples) >= 2 else [samples[0]] * 9
    return {"median_us": statistics.median(samples), "p10_us": qs[0], "p90_us": qs[-1], "min_us": min(samples)}


def make_jpeg() -> tuple[bytes, np.ndarray]:
    from skimage import data

    rgb = np.ascontiguousarray(data.coffee()[12:387, 50:550])  # 500x375 crop of a real photo
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("could not encode the benchmark JPEG")
    blob = buf.tobytes()
    return blob, cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def run(rounds: int, threads: int) -> dict:
    spec = PreprocessSpec.from_transform_ops(PADDLEX_CLS_OPS)
    blob, rgb = make_jpeg()
    chain = PaddleXChain()
    fused = FusedPreprocessor(spec, threads=threads)
    fused_1t = FusedPreprocessor(spec, threads=1)
    u8 = ResizeCropU8(spec, threads=threads)

    # Parity guard: a benchmark of a wrong kernel is worthless.
    ref = chain.after_decode([rgb])
    if not np.array_equal(fused([rgb]), ref) or not np.array_equal(fused.preprocess_encoded([blob]).batch, ref):
        raise RuntimeError("fused output differs from PaddleX's chain; not benchmarking")

    cases = []
    for batch in (1, 32):
        imgs, blobs = [rgb] * batch, [blob] * batch
        buf = np.empty((batch, 3, 224, 224), np.float32)
        buf_u8 = np.empty((batch, 224, 224, 3), np.uint8)
        iters = 40 if batch == 1 else 2
        variants_after = {
            f"hpi fused ({threads} threads)": lambda imgs=imgs, buf=buf: fused(imgs, out=buf),
        }
        variants_with = {
            f"hpi fused ({threads} threads)": lambda blobs=blobs, buf=buf: fused.preprocess_encoded(blobs, out=buf),
            f"in-graph CPU half, ResizeCropU8 ({threads} threads)": lambda blobs=blobs, b=buf_u8: u8.preprocess_encoded(
                blobs, out=b
            ),
        }
        if batch == 1:
            # Floors shared by both sides: the resize PaddleX makes (hpi must make the same one to stay exact) and
            # the JPEG decode. They bound the batch-1 ratios a bit-exact kernel can reach.
            variants_after["floor: cv2.resize alone (PaddleX's call)"] = lambda: cv2.resize(
                rgb, (341, 256), interpolation=cv2.INTER_LINEAR
            )
            variants_with["floor: cv2.imdecode alone"] = lambda: cv2.imdecode(
                np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR
            )
        if batch > 1 and threads > 1:
            variants_after["hpi fused (1 thread)"] = lambda imgs=imgs, buf=buf: fused_1t(imgs, out=buf)
            variants_with["hpi fused (1 thread)"] = lambda blobs=blobs, buf=buf: fused_1t.preprocess_encoded(
                blobs, out=buf
            )
        cases.append(("after decode", batch, iters, lambda imgs=imgs: chain.after_decode(imgs), variants_after, 3.0))
        cases.append(("with decode", batch, iters, lambda blobs=blobs: chain.from_bytes(blobs), variants_with, 1.5))

    samples: dict[tuple[str, int, str], list[float]] = {}
    cpu_samples: dict[tuple[str, int, str], list[float]] = {}
    for _kind, _batch, _iters, base, variants, _ in cases:  # warm-up (pools, scratch buffers, caches)
        base()
        for fn in variants.values():
            fn()
            fn()
    load_start = os.getloadavg()
    for r in range(rounds):
        for kind, batch, iters, base, variants, _ in cases:
            order = [("PaddleX chain", base), *variants.items()]
            if r % 2:
                order.reverse()
            for name, fn in order:
                wall, cpu = per_image_us(fn, iters, batch)
                samples.setdefault((kind, batch, name), []).append(wall)
                cpu_samples.setdefault((kind, batch, name), []).append(cpu)
    load_end = os.getloadavg()

    rows = []
    for kind, batch, _iters, _, variants, target in cases:
        base_stats = summarise(samples[(kind, batch, "PaddleX chain")])
        for name in variants:
            stats = summarise(samples[(kind, batch, name)])
            per_round = [
                b / f for b, f in zip(samples[(kind, batch, "PaddleX chain")], samples[(kind, batch, name)])
            ]
            ratio = base_stats["median_us"] / stats["median_us"]
            base_cpu = statistics.median(cpu_samples[(kind, batch, "PaddleX chain")])
            hpi_cpu = statistics.median(cpu_samples[(kind, batch, name)])
            counts = name.startswith("hpi fused") and name.endswith(f"({threads} threads)")
            rows.append(
                {
                    "case": kind,
                    "batch": batch,
                    "variant": name,
                    "paddlex_chain": base_stats,
                    "hpi": stats,
                    "ratio_of_medians": ratio,
                    "cpu_us_per_image": {"paddlex_chain": base_cpu, "hpi": hpi_cpu},
                    "cpu_ratio": base_cpu / hpi_cpu,
                    "per_round_ratio_p10_p90": [statistics.quantiles(per_round, n=10)[0],
                                                statistics.quantiles(per_round, n=10)[-1]],
                    "target": target if counts else None,
                    "met": (ratio >= target) if counts else None,
                }
            )
    for k in (fused, fused_1t, u8):
        k.close()
    return {
        "benchmark": "preprocess",
        "image": "500x375 JPEG (quality 90, skimage.data.coffee crop) -> resize_short 256, crop 224, normalise, CHW",
        "rounds": rounds,
        "threads": threads,
        "method": "each round times PaddleX's chain and every hpi variant back to back (order alternating); "
        "per-image microseconds, wall clock and process CPU time; ratio = PaddleX median / hpi median "
        "(CPU time sums all threads, so it shows cost, not the latency gained from the second core)",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "opencv_threads": cv2.getNumThreads(),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "shared": "yes: other engineers' jobs ran on the same 2 cores during the run",
        },
        "results": rows,
        "end_to_end": {
            "target": "JPEG bytes to top-5, PP-LCNet_x1_0, 2 threads: >= 2.5x PaddleX normal mode",
            "status": "pending: needs hpi.predictor with the fused path and a PaddleX normal-mode baseline",
        },
    }


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Preprocessing: PaddleX's op chain vs hpi (side by side, one run)",
        "",
        f"{report['image']}. {report['rounds']} rounds; {report['method']}.",
        f"Machine: {m['cpus']} CPUs, shared with other jobs (load average {m['loadavg_start'][0]:.2f} at start, "
        f"{m['loadavg_end'][0]:.2f} at end); OpenCV {m['opencv']} ({m['opencv_threads']} threads), "
        f"numpy {m['numpy']}, Python {m['python']}.",
        "",
        "| case | batch | hpi variant | PaddleX chain us/img (median, p10-p90) | hpi us/img (median, p10-p90) "
        "| wall ratio | per-round ratio p10-p90 | CPU us/img PaddleX / hpi | CPU ratio | target (on wall ratio) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        b, h = row["paddlex_chain"], row["hpi"]
        target = "-" if row["target"] is None else f">= {row['target']}x: {'met' if row['met'] else 'NOT met'}"
        lo, hi = row["per_round_ratio_p10_p90"]
        lines.append(
            f"| {row['case']} | {row['batch']} | {row['variant']} | {b['median_us']:.0f} ({b['p10_us']:.0f}-"
            f"{b['p90_us']:.0f}) | {h['median_us']:.0f} ({h['p10_us']:.0f}-{h['p90_us']:.0f}) | "
            f"{row['ratio_of_medians']:.2f}x | {lo:.2f}-{hi:.2f}x | {row['cpu_us_per_image']['paddlex_chain']:.0f} / "
            f"{row['cpu_us_per_image']['hpi']:.0f} | {row['cpu_ratio']:.2f}x | {target} |"
        )
    floors = {row["case"]: row for row in report["results"] if row["variant"].startswith("floor")}
    if floors:
        lines += ["", "Reading: hpi's output is bit-identical to the chain's, so it makes the same cv2.resize and the same "
                  "cv2.imdecode. At batch 1 those calls alone bound the reachable ratio (CPU time):"]
        for case, row in floors.items():
            lines.append(f"- {case}: the chain costs {row['cpu_ratio']:.2f}x `{row['variant'][7:]}`, the most any "
                         "bit-exact kernel could gain there.")
    e2e = report["end_to_end"]
    lines += ["", f"End to end ({e2e['target']}): {e2e['status']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    report = run(args.rounds, args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "preprocess.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = to_markdown(report)
    (args.out_dir / "preprocess.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
