"""Scale-out onto existing engines: Triton model repositories, Ray Data batch jobs and Ray Serve replicas.

* :mod:`~hpi.scaleout.triton`: ``hpi export --format triton`` (a model repository from hpi's decision).
* :mod:`~hpi.scaleout.ray_batch`: a callable class for ``ray.data.Dataset.map_batches`` and ``hpi batch``.
* :mod:`~hpi.scaleout.ray_serve`: ``hpi serve --engine ray`` and an application for ``serve run``.
* :mod:`~hpi.scaleout.ray_cluster`: joining ``RAY_ADDRESS`` or starting a local cluster on 127.0.0.1.

Their commands are ``hpi export --format triton``, ``hpi batch`` and ``hpi serve --engine ray`` (in :mod:`hpi.cli`).

Ray and tritonclient are optional (the ``ray`` and ``triton`` extras); nothing here imports them at module level.
"""
