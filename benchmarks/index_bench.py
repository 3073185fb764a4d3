"""Single-query search latency of the PP-ShiTuV2 feature index (HNSW32, inner product).

Builds :class:`hpi.retrieval.index.FeatureIndex` over ``--gallery`` seeded random L2-normalised vectors
(default 100k x 512, the size of PP-ShiTuV2_rec features), then times ``index.search(query, k)`` one query at a
time with ``time.perf_counter_ns`` after a warm-up, and reports p50 / p90 / p99. Recall@k against an exact scan
is reported too: in 512 dimensions the true neighbours of a random vector are barely closer than any other vector,
the hardest case for a graph index, so that recall is a lower bound for real (clustered) galleries. A sweep over
``ef_search`` on the same index shows what recall costs in latency.

Usage:
    PYTHONPATH=. python benchmarks/index_bench.py         # writes benchmarks/results/index.json
    PYTHONPATH=. python benchmarks/index_bench.py --ef-search 128 --output /tmp/index.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import faiss
import numpy as np

from hpi.retrieval.index import DEFAULT_EF_SEARCH, FeatureIndex


def _unit_rows(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((count, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def _cpu_model() -> str:
    from hpi.cpu import cpu_info

    return str(cpu_info()["model"])


def _latencies_ms(index: FeatureIndex, queries: np.ndarray, k: int) -> np.ndarray:
    """Wall time of ``index.search(query, k)`` for each query, one call per query."""
    latencies_ns = np.empty(len(queries), dtype=np.int64)
    for position, query in enumerate(queries):
        begin = time.perf_counter_ns()
        index.search(query, k=k)
        latencies_ns[position] = time.perf_counter_ns() - begin
    return latencies_ns / 1e6


def _recall(index: FeatureIndex, queries: np.ndarray, exact: np.ndarray, k: int) -> float:
    found = index.search(queries, k=k)
    overlaps = [
        len({hit.id for hit in hits} & set(row.tolist())) for hits, row in zip(found, exact, strict=True)
    ]
    return float(np.mean(overlaps)) / k


def _percentiles(latencies_ms: np.ndarray, *which: int) -> dict[str, float]:
    return {f"p{p}_ms": round(float(np.percentile(latencies_ms, p)), 4) for p in which}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gallery", type=int, default=100_000, help="gallery vectors (default 100000)")
    parser.add_argument("--dim", type=int, default=512, help="feature dimension (default 512)")
    parser.add_argument("--queries", type=int, default=2000, help="timed single queries (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed queries first (default 200)")
    parser.add_argument(
        "--k", type=int, default=5, help="results per query (default 5, PP-ShiTuV2's return_k)"
    )
    parser.add_argument("--ef-search", type=int, default=DEFAULT_EF_SEARCH, help="HNSW search depth")
    parser.add_argument(
        "--recall-queries", type=int, default=200, help="queries checked against an exact scan"
    )
    parser.add_argument(
        "--sweep", default="16,64,256,1024", help="ef_search values of the recall/latency sweep"
    )
    parser.add_argument("--sweep-queries", type=int, default=300, help="timed queries per sweep point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent / "results" / "index.json"
    )
    args = parser.parse_args()

    load_before = os.getloadavg()
    rng = np.random.default_rng(args.seed)
    gallery = _unit_rows(rng, args.gallery, args.dim)
    labels = [f"item{i}" for i in range(args.gallery)]
    queries = _unit_rows(rng, args.warmup + args.queries, args.dim)
    timed_queries = queries[args.warmup :]

    started = time.perf_counter()
    index = FeatureIndex(gallery, labels, index_type="HNSW32", metric_type="IP", ef_search=args.ef_search)
    build_s = time.perf_counter() - started

    for query in queries[: args.warmup]:
        index.search(query, k=args.k)
    latencies_ms = _latencies_ms(index, timed_queries, args.k)

    checked = timed_queries[: args.recall_queries]
    exact = np.argsort(-(checked @ gallery.T), axis=1)[:, : args.k]
    recall = _recall(index, checked, exact, args.k)

    sweep = []
    for ef_search in (int(value) for value in args.sweep.split(",") if value.strip()):
        index.ef_search = ef_search
        timed = _latencies_ms(index, timed_queries[: args.sweep_queries], args.k)
        point = {"ef_search": ef_search, **_percentiles(timed, 50, 99)}
        point[f"recall_at_{args.k}"] = round(_recall(index, checked, exact, args.k), 4)
        sweep.append(point)

    result = {
        "benchmark": "FeatureIndex.search, one query per call",
        "index_type": "HNSW32",
        "metric_type": "IP",
        "gallery": args.gallery,
        "dim": args.dim,
        "k": args.k,
        "ef_search": args.ef_search,
        "queries": args.queries,
        "warmup": args.warmup,
        "seed": args.seed,
        "build_s": round(build_s, 2),
        **_percentiles(latencies_ms, 50, 90, 99),
        "mean_ms": round(float(latencies_ms.mean()), 4),
        f"recall_at_{args.k}_random_vectors": round(recall, 4),
        "recall_queries": len(checked),
        "ef_search_sweep": sweep,
        "machine": {
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "faiss_omp_threads": faiss.omp_get_max_threads(),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "load_average_before": [round(value, 2) for value in load_before],
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
            "note": "shared 2-core machine: other jobs were running during the measurement (see load averages)",
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
