"""Batch inference on Ray Data: a callable class for ``Dataset.map_batches`` and the ``hpi batch`` job around it.

>>> import ray
>>> from hpi.scaleout.ray_batch import HpiClassifier
>>> ds = ray.data.read_binary_files("images/", include_paths=True)       # bytes + path columns
>>> out = ds.map_batches(HpiClassifier, fn_constructor_kwargs={"model_name": "PP-LCNet_x1_0", "model_dir": "m/"},
...                      batch_size=16, concurrency=2, num_cpus=1, batch_format="numpy")

Each actor builds its model once, with as many engine threads as CPUs Ray gave the actor. Images are decoded
with hpi's decoder (the pixels PaddleX's reader gives), not Ray's ``read_images``, which decodes with Pillow and
differs. A bad image does not fail the batch: its row has the message in ``error`` and empty results.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpi.errors import HpiError, InvalidConfigError, InvalidInputError

logger = logging.getLogger(__name__)

# Output columns: PaddleX's classification result fields, plus the error of a row that failed.
RESULT_COLUMNS = ("input_path", "class_ids", "scores", "label_names", "error")


def actor_cpus() -> int:
    """CPUs Ray assigned to the current actor or task (1 outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, int(cpus))
    except ImportError:
        pass
    return 1


class HpiClassifier:
    """Classify a batch of encoded images; one model per instance (per Ray actor).

    Args:
        model_name: the PaddleX model name.
        model_dir: its directory (workers must be able to read it).
        use_hpip: high-performance mode; the decision is cached, so measure once on the driver first
            (:func:`run_batch` does) rather than in every actor.
        hpi_config: as for ``create_model``; ``threads`` defaults to the actor's CPUs.
        topk: classes per row (default: the model's).
        cache_dir: the engine cache (shared by the actors of one machine).
        bytes_column / path_column: where the encoded images and their names are in a batch.
    """

    def __init__(self, model_name: str, model_dir: str | None = None, *, use_hpip: bool = False,
                 hpi_config: Mapping[str, Any] | None = None, topk: int | None = None, cache_dir: str | None = None,
                 bytes_column: str = "bytes", path_column: str = "path") -> None:
        from hpi.api import create_model

        config = dict(hpi_config or {})
        config.setdefault("threads", actor_cpus())
        self.model = create_model(model_name, model_dir, device="cpu", use_hpip=use_hpip, hpi_config=config,
                                  topk=topk, cache_dir=cache_dir)
        self.bytes_column, self.path_column = bytes_column, path_column
        logger.info("batch worker: %r with %d thread(s)", self.model, config["threads"])

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        from hpi.errors import PredictionError
        from hpi.preprocess.decode import decode_image

        if self.bytes_column not in batch:
            raise InvalidConfigError(f"batch has no column {self.bytes_column!r}; columns: {sorted(batch)}")
        blobs = list(batch[self.bytes_column])
        names = [str(p) for p in batch[self.path_column]] if self.path_column in batch else [
            f"row {i}" for i in range(len(blobs))]
        out: dict[str, list[Any]] = {c: [None] * len(blobs) for c in RESULT_COLUMNS}
        out["input_path"] = names
        arrays, positions = [], []
        for i, (blob, name) in enumerate(zip(blobs, names)):
            try:
                if not isinstance(blob, (bytes, bytearray, memoryview, np.ndarray)):
                    raise InvalidInputError(f"{name}: expected encoded image bytes, got {type(blob).__name__}")
                data = blob.tobytes() if isinstance(blob, np.ndarray) else bytes(blob)
                arrays.append(decode_image(data, name, channel_order="BGR"))  # predict() takes BGR arrays
                positions.append(i)
            except HpiError as exc:
                out["error"][i] = str(exc)
        results: list[Any] = []
        if arrays:
            try:
                results.extend(self.model.predict(arrays, batch_size=len(arrays)))
            except PredictionError as exc:
                for failure in exc.failures:
                    out["error"][positions[failure.index]] = f"{names[positions[failure.index]]}: {failure.error}"
        for res in results:  # each result knows its position in ``arrays``
            i = positions[res["_index"]]
            for column in ("class_ids", "scores", "label_names"):
                out[column][i] = list(res[column])
        for column in ("class_ids", "scores", "label_names"):
            out[column] = [v if v is not None else [] for v in out[column]]
        return out

    def __del__(self) -> None:
        model = getattr(self, "model", None)
        if model is not None:
            model.close()


REMOTE_TIMEOUT_S = 5.0  # connecting to and listing a remote store; a wrong endpoint fails within seconds


def remote_files(uri: str, timeout_s: float = REMOTE_TIMEOUT_S) -> tuple[list[str], Any]:
    """The images under a remote URI, and the pyarrow filesystem that reads them (for ``read_binary_files``).

    Only ``s3://`` is supported, configured the way AWS tools are: ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY`` (or ``AWS_PROFILE`` / ``~/.aws/credentials``), ``AWS_REGION``, and ``AWS_ENDPOINT_URL``
    for an S3-compatible server (MinIO, Ceph, moto). The listing runs here, with short timeouts and no retries, so
    an unreachable endpoint fails within seconds instead of after pyarrow's retries.

    Raises:
        InvalidInputError: an unsupported scheme, missing configuration, an unreachable endpoint, no images.
    """
    from urllib.parse import urlparse

    from hpi.inputs import IMAGE_SUFFIXES

    scheme = urlparse(uri).scheme.lower()
    if scheme != "s3":
        raise InvalidInputError(
            f"{uri}: {scheme}:// inputs are not supported by hpi batch; supported: local paths and s3:// (AWS or an "
            "S3-compatible server via AWS_ENDPOINT_URL). Copy the images to a local or S3 path first")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    has_keys = bool(os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"))
    credentials_file = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    has_profile = bool(os.environ.get("AWS_PROFILE")) or Path(credentials_file).expanduser().is_file()
    if not (has_keys or has_profile):
        raise InvalidInputError(
            f"{uri}: no S3 credentials configured; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
            "AWS_REGION, and AWS_ENDPOINT_URL for an S3-compatible server")
    import pyarrow.fs as pafs

    options: dict[str, Any] = {"connect_timeout": timeout_s, "request_timeout": timeout_s,
                               "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=1),
                               "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                               or "us-east-1"}
    if endpoint:
        parsed = urlparse(endpoint)
        options["endpoint_override"] = parsed.netloc or parsed.path
        options["scheme"] = parsed.scheme or "https"
    if has_keys:
        options.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                       session_token=os.environ.get("AWS_SESSION_TOKEN"))
    where = f"the S3 endpoint {endpoint}" if endpoint else "AWS S3"
    path = uri.split("://", 1)[1].rstrip("/")
    try:
        fs = pafs.S3FileSystem(**options)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            entries = [info]
        elif info.type == pafs.FileType.Directory:
            entries = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        else:
            raise InvalidInputError(f"{uri}: no such object or prefix on {where}")
    except OSError as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(
            f"{uri}: cannot list it on {where} within {timeout_s:g} s: {first}; check AWS_ENDPOINT_URL, the "
            "credentials and AWS_REGION") from exc
    files = sorted(e.path for e in entries if e.type == pafs.FileType.File
                   and Path(e.path).suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidInputError(f"{uri}: no images there on {where} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files, fs


def expand_input(spec: str) -> list[str]:
    """A directory (its images), a glob pattern or a file; a remote URI is checked by :func:`remote_files`."""
    from hpi.inputs import IMAGE_SUFFIXES

    if "://" in spec:
        return remote_files(spec)[0]
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        files = [str(path)]
    else:
        files = sorted(p for p in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p))
    if not files:
        raise InvalidInputError(f"{spec}: no images (expected a directory of images, an image file or a glob)")
    return files


@dataclass(frozen=True)
class BatchReport:
    """What a batch job did."""

    output: Path
    rows: int
    failed: int
    workers: int
    threads_per_worker: int
    backend: str  # the engine each worker runs, e.g. onnxruntime[fp32]
    seconds: float
    interrupted: bool = False  # stopped by a signal before the end: no output written
    total: int = 0  # images the job was given


def run_batch(model: str, inputs: str, output: str | os.PathLike[str], *, model_dir: str | None = None,
              use_hpip: bool = False, workers: int | None = None, batch_size: int = 16, topk: int | None = None,
              cache_dir: str | None = None, num_cpus: int | None = None,
              object_store_bytes: int | None = None, address: str | None = None,
              progress: Callable[[int, int], None] | None = None, stop: Any = None) -> BatchReport:
    """Classify images on Ray Data and write one parquet file of PaddleX-format results.

    Runs on the cluster at ``address`` (else ``RAY_ADDRESS``), else on a local cluster bound to 127.0.0.1 (no
    dashboard). The
    model is located (or built from the zoo) and, with ``use_hpip``, its decision measured once here; each worker
    then loads it with threads = its CPUs.

    Args:
        model: model name; ``model_dir`` its directory (default: the local model store, built from the zoo).
        inputs: a directory, a glob pattern, an image file, or a URI Ray can read.
        output: the parquet file to write (rows in input order).
        workers: actors (default: one per 2 CPUs of the cluster, at least 1).
        batch_size: images per ``map_batches`` call.
        num_cpus, object_store_bytes: size of a local cluster (ignored when joining one).
        address: a running cluster to join (``HOST:PORT``); default ``RAY_ADDRESS``, else a local cluster.
        progress: called with (rows done, rows total) as results arrive.
        stop: a :class:`hpi.scaleout.ray_cluster.StopSignals`, entered once Ray is up (``ray.init`` installs its
            own SIGTERM handler): on SIGTERM or SIGINT the job stops after the batch in hand, writes no output and
            returns a report with ``interrupted`` set.
    """
    from hpi.cache import EngineCache
    from hpi.loading import locate_model
    from hpi.scaleout.ray_cluster import connect, disconnect

    filesystem = None
    if "://" in inputs:
        files, filesystem = remote_files(inputs)
    else:
        files = expand_input(inputs)
    source = locate_model(model, model_dir, build=True)
    cache = EngineCache(cache_dir)
    connection = connect(address=address, num_cpus=num_cpus, object_store_bytes=object_store_bytes)
    threads_before: set[threading.Thread] | None = None
    try:
        if stop is not None:
            stop.__enter__()
        import pyarrow as pa
        import pyarrow.parquet as pq
        import ray

        cpus = max(1, int(connection.cpus))
        workers = workers or max(1, cpus // 2)
        if workers < 1:
            raise InvalidConfigError(f"workers must be positive, got {workers}")
        threads = max(1, cpus // workers)
        hpi_config = {"threads": threads}
        label = _engine_label(source, use_hpip, hpi_config, cache)
        start = time.perf_counter()
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows come out in input order
        ctx.enable_progress_bars = False  # the caller's progress callback reports instead
        # Reading files is I/O: it asks for no CPU, so that workers holding every CPU cannot starve it, and runs
        # as few tasks at a time as there are workers (with no CPU to count, Ray would start a process per block).
        ds = ray.data.read_binary_files(files, include_paths=True, num_cpus=0, concurrency=workers,
                                        filesystem=filesystem,
                                        override_num_blocks=max(workers, min(len(files) // batch_size, 4 * workers)))
        ds = ds.map_batches(
            HpiClassifier, batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads,
            fn_constructor_kwargs={"model_name": source.name, "model_dir": str(source.directory),
                                   "use_hpip": use_hpip, "hpi_config": hpi_config, "topk": topk,
                                   "cache_dir": str(cache.root)})
        out = Path(output)
        schema = pa.schema([("input_path", pa.string()), ("class_ids", pa.list_(pa.int64())),
                            ("scores", pa.list_(pa.float64())), ("label_names", pa.list_(pa.string())),
                            ("error", pa.string())])
        rows = failed = 0
        # The results (a few numbers per image) are gathered in memory and written once, atomically: a stopped or
        # failed job leaves no partial file, and a reader never sees half of one.
        sink = pa.BufferOutputStream()
        threads_before = set(threading.enumerate())
        batches = iter(ds.iter_batches(batch_format="pyarrow", batch_size=batch_size))
        with pq.ParquetWriter(sink, schema) as writer, contextlib.closing(batches):  # type: ignore[type-var]
            for batch in batches:
                table = batch.select(list(RESULT_COLUMNS)).cast(schema)
                writer.write_table(table)
                rows += table.num_rows
                failed += table.num_rows - table.column("error").null_count
                if progress:
                    progress(rows, len(files))
                if stop is not None and stop.event.is_set():
                    return BatchReport(out, rows, failed, workers, threads, label, time.perf_counter() - start,
                                       interrupted=True, total=len(files))
        from hpi.storage import write_file_atomic

        write_file_atomic(out, sink.getvalue().to_pybytes())
        return BatchReport(out, rows, failed, workers, threads, label, time.perf_counter() - start,
                           total=len(files))
    finally:
        if stop is not None:
            stop.__exit__(None, None, None)
        if threads_before is not None:
            _settle_iteration(threads_before)
        disconnect(connection)


ITERATION_SETTLE_S = 10.0  # at most this long for Ray Data's iteration threads to finish the block in hand


def _settle_iteration(threads_before: set[threading.Thread]) -> None:
    """Wait (bounded) for the threads Ray Data's iterator started to end. A job stopped mid-way (SIGTERM) closes
    the iterator, but its fetch threads (``iter_threaded``) finish the block in hand first; one still calling into
    Ray after ``ray.shutdown()`` makes Ray's core worker end the process with status 1 instead of the job's 143."""
    deadline = time.monotonic() + ITERATION_SETTLE_S
    for thread in set(threading.enumerate()) - threads_before:
        if thread.name.startswith("iter_"):
            thread.join(max(0.0, deadline - time.monotonic()))


def _engine_label(source: Any, use_hpip: bool, hpi_config: dict[str, Any], cache: Any) -> str:
    """The engine the workers will run; with ``use_hpip`` the decision is measured (or read) here, once."""
    from hpi.config import HpiConfig
    from hpi.device import parse_device

    if not use_hpip:
        return "paddle[fp32]" if source.format == "paddle" else "onnxruntime[fp32]"
    from hpi.selection.decision import cached_selection

    record = cached_selection(source, parse_device("cpu"), HpiConfig.from_dict(hpi_config), cache=cache, batch_size=1)
    return record.winner.candidate.label


__all__ = ["RESULT_COLUMNS", "BatchReport", "HpiClassifier", "actor_cpus", "expand_input", "remote_files",
           "run_batch"]
