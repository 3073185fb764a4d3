"""``hpi serve --engine ray``: hpi's FastAPI app (protocol, limits, dynamic batcher) inside each Ray Serve replica.

>>> from hpi.scaleout.ray_serve import build_application
>>> app = build_application("image_classification", replicas=2)            # a ray.serve Application
>>> # or from a shell:  serve run hpi.scaleout.ray_serve:app_builder pipeline=image_classification replicas=2

Every replica builds its own pipeline and runs :func:`hpi.serving.app.create_app`, so the responses are the ones
``hpi serve`` gives. PP-ShiTuV2 indexes changed through the API live in one directory every replica reads
(``index_dir``; on a multi-machine cluster it must be shared storage): a replica reloads an index when its saved
version changed (:class:`SharedIndexStore`), and changes to one index are serialised across replicas by a file
lock, so an add on one replica is answered by every other. Each response carries ``X-Hpi-Replica`` (host and
process id), which says which replica answered.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpi.errors import InvalidConfigError
from hpi.retrieval.index import FeatureIndex
from hpi.retrieval.storage import META_FILE
from hpi.serving.indexes import DEFAULT_KEY, IndexStore

logger = logging.getLogger(__name__)

REPLICA_HEADER = "X-Hpi-Replica"
RAY_HEALTHY_PATH = "/-/healthy"


class SharedIndexStore(IndexStore):
    """An :class:`IndexStore` that several processes share through its directory.

    Reads reload an index whose ``meta.json`` changed since this process loaded it (every save replaces the
    directory, so its inode and mtime change); changes take a per-index file lock, reload if stale, change, save,
    and release, so concurrent changes from different replicas all land.
    """

    def __init__(self, root: str | Path, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self._seen: dict[str, tuple[int, int, int] | None] = {}

    @classmethod
    def from_store(cls, store: IndexStore) -> SharedIndexStore:
        return cls(store.root, default=store.default, default_path=store.default_path, max_cached=store.max_cached)

    def _meta_path(self, key: str | None) -> Path | None:
        if key is None:
            return self.default_path / META_FILE if self.default_path is not None else None
        return self.root / key / META_FILE

    def _version(self, key: str | None) -> tuple[int, int, int] | None:
        path = self._meta_path(key)
        try:
            st = path.stat() if path is not None else None
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size) if st else None

    def _refresh(self, key: str | None) -> None:
        """Drop (or, for the default index, reload) this process's copy when the saved one is newer."""
        slot = key or DEFAULT_KEY
        version = self._version(key)
        if slot in self._seen and self._seen[slot] == version:
            return
        if key is None:
            if self.default_path is not None and version is not None and slot in self._seen:
                self.default = self.load_quoted(self.default_path, "the default index")
        else:
            self._forget(key)
        self._seen[slot] = version

    def get(self, key: str | None) -> FeatureIndex:
        if key is not None:
            self._check_key(key)
        self._refresh(key)
        return super().get(key)

    def create(self, index: FeatureIndex) -> str:
        key = super().create(index)
        self._seen[key] = self._version(key)
        return key

    def _change(self, key: str | None, change: Any) -> dict[int, str]:
        from hpi.storage import directory_lock

        if key is not None:
            self._check_key(key)
        # storage's lock (the one every persisted directory uses), on a lock file of its own per index
        target = self.root / (key or DEFAULT_KEY)
        with directory_lock(target, lock_path=self.root / ".locks" / f"{key or DEFAULT_KEY}.lock"):
            self._refresh(key)
            id_map = super()._change(key, change)
            self._seen[key or DEFAULT_KEY] = self._version(key)
            return id_map


def replica_app(pipeline: Any, settings: Any, config: Mapping[str, Any] | None = None) -> Any:
    """The app one replica serves: :func:`create_app` over the pipeline, with a shared index store and the
    ``X-Hpi-Replica`` header.

    Args:
        pipeline: a pipeline name or YAML path (``image_classification``, ``PP-ShiTuV2``).
        settings: :class:`hpi.serving.common.ServeSettings`.
        config: a pipeline configuration mapping used instead of the YAML (as ``create_pipeline(config=)``).
    """
    from hpi.pipelines import create_pipeline
    from hpi.serving.app import create_app

    runner: Any = pipeline
    if config is not None:
        runner = create_pipeline(pipeline, config=config, device=settings.device, use_hpip=settings.use_hpip,
                                 hpi_config=settings.hpi_config, cache_dir=settings.cache_dir)
    app = create_app(runner, settings)
    service = app.state.service
    if config is not None:
        service.owned = runner  # closed with the app, as a pipeline built from a name is
    if isinstance(getattr(service, "store", None), IndexStore):
        service.store = SharedIndexStore.from_store(service.store)
    ident = f"{socket.gethostname()}:{os.getpid()}"

    # Ray Serve's proxy answers /-/routes and, since Ray 2.50 or so, /-/healthz itself; health checks written for
    # the /-/healthy of earlier Serve releases reach the app, which answers them as the proxy did.
    async def ray_healthy() -> Any:
        from fastapi.responses import PlainTextResponse

        healthy = service.healthy
        return PlainTextResponse("success" if healthy else "unhealthy", status_code=200 if healthy else 503)

    app.add_api_route(RAY_HEALTHY_PATH, ray_healthy, methods=["GET"], include_in_schema=False)

    @app.middleware("http")
    async def name_replica(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers[REPLICA_HEADER] = ident
        return response

    return app


def build_application(pipeline: str, settings: Any = None, *, config: Mapping[str, Any] | None = None,
                      replicas: int = 2, cpus_per_replica: float = 1.0) -> Any:
    """A Ray Serve application: ``replicas`` copies of hpi's app, each with ``cpus_per_replica`` CPUs (and as many
    engine threads, unless ``settings.hpi_config`` says otherwise).

    PP-ShiTuV2 needs ``settings.index_dir`` to be a directory every replica can reach; it defaults to hpi serve's
    own default directory, which is fine on one machine.
    """
    from dataclasses import replace

    from ray import serve

    from hpi.serving.common import ServeSettings

    if not isinstance(replicas, int) or replicas < 1:
        raise InvalidConfigError(f"replicas must be a positive integer, got {replicas!r}")
    settings = settings or ServeSettings()
    hpi_config = dict(settings.hpi_config or {})
    hpi_config.setdefault("threads", max(1, int(cpus_per_replica)))
    settings = replace(settings, hpi_config=hpi_config,
                       index_dir=str(settings.resolved_index_dir()))  # one directory for every replica

    @serve.ingress()
    class HpiReplica:
        def __init__(self, pipeline: str, settings: Any, config: Mapping[str, Any] | None) -> None:
            os.environ.setdefault("KMP_BLOCKTIME", "1")  # as hpi serve: OpenMP must not spin between batches
            self.args = (pipeline, settings, config)

        def __serve_build_asgi_app__(self) -> Any:
            return replica_app(*self.args)

    deployment = serve.deployment(HpiReplica, name="hpi", num_replicas=replicas,
                                  ray_actor_options={"num_cpus": cpus_per_replica})
    return deployment.bind(pipeline, settings, dict(config) if config is not None else None)


def app_builder(args: Mapping[str, str]) -> Any:
    """For ``serve run hpi.scaleout.ray_serve:app_builder pipeline=NAME [replicas=2] [cpus_per_replica=1]
    [device=cpu] [use_hpip=true] [index_dir=DIR]``."""
    from hpi.serving.common import ServeSettings

    known = {"pipeline", "replicas", "cpus_per_replica", "device", "use_hpip", "index_dir"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise InvalidConfigError(f"unknown argument(s) {unknown}; known: {sorted(known)}")
    settings = ServeSettings(device=args.get("device"), use_hpip=str(args.get("use_hpip", "")).lower() == "true",
                             index_dir=args.get("index_dir"))
    return build_application(args.get("pipeline", "image_classification"), settings,
                             replicas=int(args.get("replicas", 2)),
                             cpus_per_replica=float(args.get("cpus_per_replica", 1)))


def serve_forever(pipeline: str, settings: Any, *, host: str = "127.0.0.1", port: int = 8080, replicas: int = 2,
                  cpus_per_replica: float | None = None, address: str | None = None) -> str | None:
    """``hpi serve --engine ray``: connect to Ray (``address``, else ``RAY_ADDRESS``, else a local loopback
    cluster), start Serve's HTTP proxy on ``host:port`` and run the application until SIGTERM or SIGINT.

    Serve's own ``/-/healthz`` and ``/-/routes`` (and ``/-/healthy``) answer beside hpi's endpoints. On a signal, Serve is shut down
    (each replica finishes its requests in flight, up to the deployment's graceful shutdown timeout), then Ray;
    a local cluster's processes are all stopped.

    Returns:
        The name of the signal that stopped the server.
    """
    from ray import serve

    from hpi.cpu import cpu_count
    from hpi.scaleout.ray_cluster import StopSignals, connect, disconnect

    connection = connect(address=address)
    try:
        with StopSignals() as stop:  # after connect(): ray.init installs its own SIGTERM handler
            cpus = cpus_per_replica or (connection.cpus or cpu_count()) / replicas  # fractions share cores
            serve.start(http_options={"host": host, "port": port})
            serve.run(build_application(pipeline, settings, replicas=replicas, cpus_per_replica=cpus), name="hpi",
                      route_prefix="/")
            logger.info("Ray Serve: %d replica(s) of %s on http://%s:%d (Ray's /-/healthz, /-/healthy and "
                        "/-/routes beside hpi's endpoints)", replicas, pipeline, host, port)
            while not stop.event.wait(1.0):
                pass
            drain_proxies(settings.drain_timeout_s)
            try:
                serve.shutdown()
            finally:
                disconnect(connection)
            logger.warning("hpi serve --engine ray stopped on %s after its replicas drained their requests",
                           stop.name)
            return stop.name
    finally:
        disconnect(connection)  # a second call is a no-op; this one runs when starting failed


PROXY_ACTOR_PREFIX = "SERVE_PROXY_ACTOR"  # Ray Serve's name for its HTTP proxy actors (one per node)


def _stop_accepting(proxy: Any) -> bool:
    """Run inside a Serve proxy actor: start its uvicorn server's graceful stop (listening socket closed, requests in
    flight finished, idle connections closed). False when the proxy has no HTTP server."""
    task = getattr(proxy, "_start_http_server_task", None)
    if task is None or not task.done():
        return False
    _, server = task.result()

    def begin() -> None:  # on the proxy's event loop
        from hpi.serving.server import take_backlog

        stop = server.shutdown
        loop = task.get_loop()

        async def shutdown(sockets: Any = None) -> None:
            take_backlog(server)  # connections the kernel accepted are answered, not reset by the close
            for conn in list(server.server_state.connections):
                if getattr(conn, "cycle", None) is None:  # accepted, request not parsed yet
                    conn.shutdown = functools.partial(_shutdown_after_grace, conn, loop)
            await stop(sockets=sockets)

        server.shutdown = shutdown
        server.should_exit = True

    task.get_loop().call_soon_threadsafe(begin)
    return True


def _shutdown_after_grace(conn: Any, loop: Any, grace_s: float = 1.0) -> None:
    """uvicorn's graceful stop closes a connection whose request it has not parsed yet; with the request's bytes
    unread in the socket, the kernel then resets it. Give the request ``grace_s`` to arrive instead: then stop the
    connection as uvicorn would (after its answer)."""

    def later() -> None:
        if conn.transport is None or conn.transport.is_closing():
            return
        if conn.cycle is None or conn.cycle.response_complete:
            conn.transport.close()
        else:
            conn.cycle.keep_alive = False

    loop.call_later(grace_s, later)


def _http_server_stopped(proxy: Any) -> bool:
    task = getattr(proxy, "_running_http_server_task", None)
    return task is None or task.done()


def drain_proxies(timeout_s: float) -> bool:
    """Stop Serve's HTTP proxies as uvicorn stops: new connections refused, requests in flight answered (at most
    ``timeout_s``). ``serve.shutdown()`` alone kills the proxies with their connections open (the clients see a
    reset). This reaches into the proxy actor (Ray 2.60's attribute names); if they change, it logs and returns
    False, and the stop goes on without draining."""
    import time

    import ray

    try:
        proxies = [ray.get_actor(a["name"], namespace=a["namespace"])
                   for a in ray.util.list_named_actors(all_namespaces=True)
                   if a["name"].startswith(PROXY_ACTOR_PREFIX)]
        stopping = [p for p, ok in zip(proxies, ray.get([p.__ray_call__.remote(_stop_accepting) for p in proxies],
                                                        timeout=10)) if ok]
        deadline = time.monotonic() + timeout_s
        while stopping and time.monotonic() < deadline:
            done = ray.get([p.__ray_call__.remote(_http_server_stopped) for p in stopping], timeout=10)
            stopping = [p for p, stopped in zip(stopping, done) if not stopped]
            time.sleep(0.1)
        if stopping:
            logger.warning("%d Serve proxy(ies) still had requests after %.0f s; stopping them anyway",
                           len(stopping), timeout_s)
        return not stopping
    except Exception as exc:  # noqa: BLE001 - Ray internals: draining is best effort, the stop must go on
        logger.warning("could not drain Ray Serve's HTTP proxies (%s: %s); stopping without draining",
                       type(exc).__name__, exc)
        return False


__all__ = ["REPLICA_HEADER", "SharedIndexStore", "app_builder", "build_application", "drain_proxies", "replica_app",
           "serve_forever"]
