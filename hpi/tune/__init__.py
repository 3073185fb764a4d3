"""``hpi tune``: the deployment with the most requests per second inside a latency budget, measured under load
through the target's real server, written as the record that runs it.

One job per module, imported forward only:

* :mod:`~hpi.tune.load`: the client load generator (keep-alive connections on loopback), shared with
  ``benchmarks/load_test.py``.
* :mod:`~hpi.tune.search`: deployments, measurements, the budget rule and the hill-climb over ordered knobs (no
  server: it is given a measuring function).
* :mod:`~hpi.tune.record`: the ``hpi-tune`` record every command reads (``hpi serve --tuned``, ``hpi export
  --format triton --tuned``), its cache key, the progress file a run resumes from.
* :mod:`~hpi.tune.measure`: one deployment measured through ``hpi serve`` (or ``hpi serve --engine ray``) started as
  a subprocess.
* :mod:`~hpi.tune.triton`: one deployment exported as a Triton repository and measured through ``tritonserver``.
* :mod:`~hpi.tune.report`: the PNG, the self-contained HTML page, the markdown and JSON tables.
* :mod:`~hpi.tune.tuner`: :func:`~hpi.tune.tuner.tune`, which puts them together.

Importing this package imports nothing heavy; :func:`~hpi.tune.tuner.tune` imports selection and matplotlib.
"""
