"""Connecting to Ray: the cluster named by ``--address`` (or ``RAY_ADDRESS``), or a local one kept on the loopback
interface; and stopping cleanly on SIGTERM/SIGINT.

A local cluster started here has no dashboard, binds its node address to 127.0.0.1 and says so. Ray still starts
its own processes (GCS server, raylet, object manager, a runtime-env and a dashboard agent, a metrics exporter);
each listens on a TCP port of the node address. Measured with Ray 2.60 on this project's machine (``ss -ltnp``
during the tests): see the README's Scale out section for the list. Nothing here opens a port to other hosts on
purpose, but Ray Serve 2.60 binds each replica's inter-deployment gRPC server to ``[::]:0`` (all interfaces) and
offers no setting for it. ``RAY_ADDRESS`` pointing at a real cluster is the way to span machines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from dataclasses import dataclass

from hpi.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class RayConnection:
    """Which cluster this process talks to, and whether it started it (and so must shut it down)."""

    address: str  # "local" or the address joined (--address, else RAY_ADDRESS)
    started_here: bool  # this process connected, so it disconnects
    cpus: float  # CPUs the cluster has
    local: bool = False  # a cluster this process started: its Ray processes stop with it


def import_ray():  # noqa: ANN201 - the ray module
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError("Ray is not installed; install it with: pip install 'hpi[ray]'") from exc
    return ray


def connect(*, address: str | None = None, num_cpus: int | None = None,
            object_store_bytes: int | None = None) -> RayConnection:
    """Join the cluster at ``address`` (else ``RAY_ADDRESS``) when one is given, else start a local cluster on
    127.0.0.1 without a dashboard.

    Args:
        address: a running cluster's GCS address (``HOST:PORT``, as ``ray start --head`` prints it), or ``auto``.
        num_cpus: CPUs of a local cluster (default: Ray's, the machine's cores); ignored when joining.
        object_store_bytes: object store size of a local cluster (default: Ray's).

    Raises:
        BackendUnavailableError: Ray is not installed, or no cluster answers at ``address``.
    """
    ray = import_ray()
    if ray.is_initialized():
        return RayConnection("existing", False, float(ray.cluster_resources().get("CPU", 0)))
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        if address.rsplit(":", 1)[0] in (LOOPBACK, "localhost"):
            _prefer_loopback()  # else Ray dials this machine's routable address instead of the loopback one given
        try:
            ray.init(address=address, configure_logging=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BackendUnavailableError(
                f"cannot join the Ray cluster at {address}: {exc}; start one with 'ray start --head' (it prints the "
                "address), or leave --address and RAY_ADDRESS unset for a local cluster. A cluster that says "
                "'Token authentication is enabled' needs RAY_AUTH_MODE=token here (and its token, in "
                "~/.ray/auth_token or RAY_AUTH_TOKEN)") from exc
        logger.info("joined the Ray cluster at %s", address)
        return RayConnection(address, True, float(ray.cluster_resources().get("CPU", 0)))
    _prefer_loopback()
    ray.init(num_cpus=num_cpus, object_store_memory=object_store_bytes, include_dashboard=False,
             _node_ip_address=LOOPBACK, configure_logging=False, log_to_driver=False)
    logger.info("started a local Ray cluster on %s (no dashboard)", LOOPBACK)
    return RayConnection("local", True, float(ray.cluster_resources().get("CPU", 0)), local=True)


def _prefer_loopback() -> None:
    """Make a local cluster use 127.0.0.1 as its node address.

    ``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough: Ray 2.60 replaces a loopback address with the
    machine's routable one (``services.resolve_ip_for_localhost``) unless multi-node clusters are off, which is
    what ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` says (Ray's own single-machine mode on macOS and Windows). The
    variable is read when Ray is imported, so it is set for the processes Ray starts and, when Ray is already
    imported here, on its constants module too.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def disconnect(connection: RayConnection, *, reap_timeout_s: float = 10.0) -> None:
    """Shut Ray down if :func:`connect` started or joined it. A local cluster stops with it, and none of its
    processes is left behind: Ray's agents otherwise notice their raylet is gone only after a minute or so, and a
    supervisor (systemd, Kubernetes) counts them against the stopped service."""
    if not connection.started_here:
        return
    ours = _ray_descendants() if connection.local else []
    import_ray().shutdown()
    if ours:
        _reap(ours, reap_timeout_s)


def _ray_descendants() -> list[object]:
    """This process's descendants that belong to Ray (its GCS, raylet, agents, workers)."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "ray" in " ".join(proc.cmdline()).lower() or proc.name().startswith(("raylet", "gcs_server", "ray::")):
                found.append(proc)
    return found


def _reap(procs: list[object], timeout_s: float) -> None:
    """Wait for ``procs`` to exit; SIGTERM those still running after ``timeout_s`` / 2, then SIGKILL."""
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=timeout_s / 2)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(alive, timeout=timeout_s / 2)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            logger.warning("Ray process %d (%s) did not stop; killing it", proc.pid, proc.name())
            proc.kill()
    psutil.wait_procs(alive, timeout=2)


class StopSignals:
    """SIGTERM and SIGINT turned into an event the main loop waits on, so that a Ray driver stops in order (its
    work drained, Ray shut down) instead of exiting inside ``ray.init``'s own handler (``sys.exit`` from a signal
    handler, which could abort the process with status 134 halfway through Ray's teardown).

    >>> with StopSignals() as stop:      # doctest: +SKIP
    ...     while not stop.event.wait(1.0):
    ...         pass
    ...     print(stop.name)              # "SIGTERM"
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum else None

    def _handle(self, signum: int, _frame: object) -> None:
        self.signum = self.signum or signum
        self.event.set()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
