"""Benchmarks of models: :mod:`~hpi.bench.measure` times them, :mod:`~hpi.bench.report` writes tables,
:mod:`~hpi.bench.plot` draws the chart.

    >>> from hpi.bench import bench_models, format_markdown
    >>> benches = list(bench_models(["PP-LCNet_x1_0"], Device("cpu"), batch_sizes=[1, 8]))  # doctest: +SKIP
    >>> print(format_markdown(benches))  # doctest: +SKIP
"""

from hpi.bench.measure import ModelBench, bench_model, bench_models
from hpi.bench.plot import plot
from hpi.bench.report import format_csv, format_json, format_markdown, load_benches, summary_rows

__all__ = ["ModelBench", "bench_model", "bench_models", "format_csv", "format_json", "format_markdown",
           "load_benches", "plot", "summary_rows"]
