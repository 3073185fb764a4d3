"""Connecting to Ray: the cluster named by ``RAY_ADDRESS``, or a local one kept on the loopback interface.

A local cluster started here has no dashboard, binds its node address to 127.0.0.1 and says so. Ray still starts
its own processes (GCS server, raylet, object manager, a runtime-env and a dashboard agent, a metrics exporter);
each listens on a TCP port of the node address. Measured with Ray 2.60 on this project's machine (``ss -ltnp``
during the tests): see the README's Scale out section for the list. Nothing here opens a port to other hosts on
purpose, but Ray Serve 2.60 binds each replica's inter-deployment gRPC server to ``[::]:0`` (all interfaces) and
offers no setting for it. ``RAY_ADDRESS`` pointing at a real cluster is the way to span machines.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from hpi.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class RayConnection:
    """Which cluster this process talks to, and whether it started it (and so must shut it down)."""

    address: str  # "local" or the RAY_ADDRESS value
    started_here: bool
    cpus: float  # CPUs the cluster has


def import_ray():  # noqa: ANN201 - the ray module
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError("Ray is not installed; install it with: pip install 'hpi[ray]'") from exc
    return ray


def connect(*, num_cpus: int | None = None, object_store_bytes: int | None = None) -> RayConnection:
    """Join ``RAY_ADDRESS`` when it is set, else start a local cluster on 127.0.0.1 without a dashboard.

    Args:
        num_cpus: CPUs of a local cluster (default: Ray's, the machine's cores); ignored for ``RAY_ADDRESS``.
        object_store_bytes: object store size of a local cluster (default: Ray's).
    """
    ray = import_ray()
    if ray.is_initialized():
        return RayConnection("existing", False, float(ray.cluster_resources().get("CPU", 0)))
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, configure_logging=False, log_to_driver=False)
        logger.info("joined the Ray cluster at %s", address)
        return RayConnection(address, True, float(ray.cluster_resources().get("CPU", 0)))
    _prefer_loopback()
    ray.init(num_cpus=num_cpus, object_store_memory=object_store_bytes, include_dashboard=False,
             _node_ip_address=LOOPBACK, configure_logging=False, log_to_driver=False)
    logger.info("started a local Ray cluster on %s (no dashboard)", LOOPBACK)
    return RayConnection("local", True, float(ray.cluster_resources().get("CPU", 0)))


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


def disconnect(connection: RayConnection) -> None:
    """Shut Ray down if :func:`connect` started or joined it (a local cluster stops with it)."""
    if connection.started_here:
        import_ray().shutdown()
