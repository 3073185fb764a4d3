"""``hpi batch``: classify many images on Ray Data (a local loopback cluster, ``--address`` or ``RAY_ADDRESS``) into
parquet.

Exit status: 0 every image classified; 1 the job ran but some images failed (their rows carry the error); 2 the job
could not run (bad input, model, cluster or remote store); 128 + the signal's number (143 for SIGTERM, 130 for
SIGINT) when stopped by a signal, after the batch in hand, with no output written.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hpi.cli.common import add_command


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpi batch`` to the main parser's subcommands."""
    return add_command(subparsers, "batch", add_arguments, run,
                       help="classify many images on Ray Data (local cluster, --address or RAY_ADDRESS), results to "
                            "parquet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hpi batch``."""
    parser.add_argument("--model", required=True, help="model name (built from the zoo if not in the store)")
    parser.add_argument("--model-dir", help="a PaddleX inference directory for --model (workers must read it)")
    parser.add_argument("--input", required=True,
                        help="a directory of images, a glob pattern, a file, or s3://BUCKET/PREFIX (configured with "
                             "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, and AWS_ENDPOINT_URL for an "
                             "S3-compatible server)")
    parser.add_argument("--output", required=True, help="the parquet file to write")
    parser.add_argument("--use-hpip", action="store_true", help="high-performance mode (measured once, here)")
    parser.add_argument("--workers", type=int, help="Ray actors, each with its own model (default: cluster CPUs / 2)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per map_batches call (default: 16)")
    parser.add_argument("--topk", type=int, help="classes per image (default: the model's)")
    parser.add_argument("--cache-dir", help="the engine cache (default: $HPI_CACHE_DIR)")
    parser.add_argument("--address", help="the Ray cluster to join (HOST:PORT as 'ray start --head' prints it; "
                                          "default: RAY_ADDRESS, else a local cluster on 127.0.0.1)")


def run(args: argparse.Namespace) -> int:
    """Run the job with a progress bar on stderr, then print where the results went; exit 1 if any image failed."""
    import logging
    import signal

    from hpi.scaleout.ray_batch import run_batch
    from hpi.scaleout.ray_cluster import StopSignals

    bar, stop = _Bar(), StopSignals()
    try:
        report = run_batch(args.model, args.input, args.output, model_dir=args.model_dir, use_hpip=args.use_hpip,
                           workers=args.workers, batch_size=args.batch_size, topk=args.topk,
                           cache_dir=args.cache_dir, address=args.address, progress=bar, stop=stop)
    finally:
        bar.close()
    if report.interrupted:
        logging.getLogger(__name__).warning(
            "hpi batch stopped on %s after %d of %d image(s); no output written", stop.name, report.rows,
            report.total)
        return 128 + int(stop.signum or signal.SIGTERM)
    print(f"{report.rows} image(s) -> {report.output} ({report.failed} failed) in {report.seconds:.1f} s: "
          f"{report.workers} worker(s) x {report.threads_per_worker} thread(s), {report.backend}")
    return 0 if report.failed == 0 else 1


class _Bar:
    """A tqdm bar on stderr when tqdm is installed (the bench extra), else a line per tenth."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            if done * 10 // total > self.shown or done == total:
                self.shown = done * 10 // total
                print(f"# {done}/{total} images", file=sys.stderr)
            return
        if self.bar is None:
            self.bar = tqdm(total=total, unit="img", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
