"""A local chronik cluster on loopback: PostgreSQL, NATS and N ``chronik serve`` processes.

``chronik cluster up`` (development) and the cluster chaos drill use the same code::

    with LocalCluster(servers=3, workers=2, base={"app": "examples.shop.app:build_app"}) as c:
        c.wait_ready()
        c.kill9("worker-1"); c.start_node("worker-1")   # chaos
        c.restart_nats()

PostgreSQL and NATS are ``chronik.testing`` services (installed with apt-get when missing and we
are root; their data lives in their own temp dirs and is removed on stop). Every node gets its
own config file in ``directory`` (the base config with the store, transport, ports and a
``cluster`` section of its own: membership on, ``node_id`` = the node's name) and its own log.
Servers and projection workers both run ``chronik serve``; when there are workers, only their
configs keep the base config's ``projections`` and ``queries`` (servers then run chronik's
built-in deadline projection only), as in ``deploy/``. Nodes run in their own sessions, so a
Ctrl-C in a terminal reaches the owner alone, which stops the nodes (SIGTERM, then SIGKILL
after the grace period), then NATS, then PostgreSQL. Imports the standard library, PyYAML,
``chronik.errors`` and ``chronik.testing`` only.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from chronik.errors import ConfigurationError, ValidationError
from chronik.testing.brokers import NatsService
from chronik.testing.cluster_node import Node, NodeFailed
from chronik.testing.service_base import ServiceNotStarted, free_port
from chronik.testing.services import PostgresService

__all__ = ["LocalCluster", "Node", "NodeFailed", "SERVER", "WORKER"]

SERVER: Final = "server"
WORKER: Final = "worker"
STOP_MARGIN: Final = 8.0  # seconds past the grace period before a node that will not stop is killed


class LocalCluster:
    """PostgreSQL, NATS and ``servers`` + ``workers`` ``chronik serve`` nodes on loopback.

    ``base`` is the app's configuration (a dict, or the path of a chronik.yaml); ``overrides``
    are merged into every node's section by section (``{"cluster": {"routing": "affinity"}}``);
    ``projections_on_servers`` keeps the projections on the servers too when there are workers;
    ``store`` runs the nodes on a store of the caller's (no PostgreSQL of ours); ``durable``:
    our PostgreSQL keeps fsync on (off by default: a dev cluster and drills, not benchmarks).
    ``directory`` holds the node configs and logs (default: a temp dir removed on stop).
    """

    def __init__(
        self,
        *,
        servers: int = 1,
        workers: int = 0,
        base: dict[str, Any] | Path | None = None,
        directory: Path | None = None,
        app_dir: Path | None = None,
        grace: float = 5.0,
        membership_ttl: float = 3.0,
        overrides: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        nats: bool = True,
        projections_on_servers: bool = False,
        store: str | None = None,
        durable: bool = False,
    ) -> None:
        if servers < 1:
            raise ValidationError(f"servers must be 1 or more, not {servers}", field="servers")
        if workers < 0:
            raise ValidationError(f"workers must be 0 or more, not {workers}", field="workers")
        self.servers = servers
        self.workers = workers
        self.base = _load_base(base)
        self.directory = directory
        self._own_directory = directory is None
        self.app_dir = (app_dir or Path.cwd()).resolve()
        self.grace = grace
        self.membership_ttl = membership_ttl
        self.overrides = overrides or {}
        self.env = env or {}
        self.postgres = PostgresService(durable=durable)
        self._store = store  # a store of the caller's: no PostgreSQL of ours
        self.nats: NatsService | None = NatsService() if nats else None
        self.nodes: dict[str, Node] = {}
        #: servers keep the base config's projections even when there are workers
        self.projections_on_servers = projections_on_servers

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start PostgreSQL and NATS, write the node configs, start every node (not waiting
        for them: ``wait_ready``). On any failure, stop what started and raise."""
        try:
            if self.directory is None:
                self.directory = Path(tempfile.mkdtemp(prefix="chronik-cluster-"))
            self.directory.mkdir(parents=True, exist_ok=True)
            if self._store is None:
                self.postgres.start()
            if self.nats is not None:
                self.nats.start()
            roles = [SERVER] * self.servers + [WORKER] * self.workers
            counts = {SERVER: 0, WORKER: 0}
            for role in roles:
                counts[role] += 1
                node = self._node(f"{role}-{counts[role]}", role)
                self.nodes[node.name] = node
            for node in self.nodes.values():
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until every node answers /readyz 200 (NodeFailed otherwise)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            node.wait_ready(max(1.0, deadline - time.monotonic()))

    def stop(self) -> list[str]:
        """Stop every node (SIGTERM; SIGKILL after the grace period), then NATS, then
        PostgreSQL; remove the temp directory if it is ours. What went wrong, as lines."""
        problems: list[str] = []
        for node in self.nodes.values():
            node.terminate()
        deadline = time.monotonic() + self.grace + STOP_MARGIN
        for node in self.nodes.values():
            was_alive = node.alive
            code = node.reap(deadline - time.monotonic())
            if was_alive and code not in (0, None):
                problems.append(f"{node.name} exited with {code}")
        for service in (self.nats, self.postgres):
            if service is not None:
                try:
                    service.stop()
                except Exception as exc:  # one service failing to stop never keeps the other
                    problems.append(f"{service.name}: {exc}")
        if self._own_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        return problems

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what it runs ----------------------------------------------------------------------------

    @property
    def store_url(self) -> str:
        """The store URL every node uses (our PostgreSQL's, unless one was given)."""
        return self._store or self.postgres.url("postgres")

    @property
    def transport_url(self) -> str | None:
        """The ``nats://`` transport URL (None without NATS)."""
        return None if self.nats is None else self.nats.url()

    def of_role(self, role: str) -> list[Node]:
        """The nodes of one role (``SERVER`` or ``WORKER``)."""
        return [n for n in self.nodes.values() if n.role == role]

    def service_pids(self) -> dict[str, int]:
        """The process ids of PostgreSQL's postmaster and of nats-server (while running)."""
        pids: dict[str, int] = {}
        if self.postgres.running:
            with contextlib.suppress(OSError, ValueError, IndexError):
                first = (self.postgres.data_dir / "postmaster.pid").read_text().split()[0]
                pids["postgresql"] = int(first)
        if self.nats is not None and self.nats.process is not None:
            pids["nats"] = self.nats.process.pid
        return pids

    # --- chaos -----------------------------------------------------------------------------------

    def kill9(self, name: str) -> None:
        """SIGKILL one node."""
        self.nodes[name].kill9()

    def start_node(self, name: str) -> None:
        """Start one node again (same config, ports and node id)."""
        self.nodes[name].start()

    def restart_nats(self) -> None:
        """Stop NATS and start it again on the same port with the same JetStream data."""
        if self.nats is None:
            raise ServiceNotStarted("this cluster runs without NATS")
        self.nats.restart()

    # --- configs ---------------------------------------------------------------------------------

    def _node(self, name: str, role: str) -> Node:
        assert self.directory is not None
        grpc_port, http_port = free_port(), free_port()
        config = node_config(
            self.base,
            name=name,
            role=role,
            store=self.store_url,
            transport=self.transport_url,
            grpc_port=grpc_port,
            http_port=http_port,
            with_workers=self.workers > 0 and not self.projections_on_servers,
            membership_ttl=self.membership_ttl,
            overrides=self.overrides,
        )
        path = self.directory / f"{name}.yaml"
        import yaml

        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return Node(
            name,
            role,
            path,
            grpc_port=grpc_port,
            http_port=http_port,
            app_dir=self.app_dir,
            grace=self.grace,
            env=self.env,
        )

    def __repr__(self) -> str:
        live = sum(1 for n in self.nodes.values() if n.alive)
        return (
            f"<LocalCluster {self.servers} servers {self.workers} workers, "
            f"{live} of {len(self.nodes)} nodes running>"
        )


def node_config(
    base: dict[str, Any],
    *,
    name: str,
    role: str,
    store: str,
    transport: str | None,
    grpc_port: int,
    http_port: int,
    with_workers: bool,
    membership_ttl: float,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """One node's configuration: ``base`` with the cluster's store, transport, loopback ports
    and membership (node id = ``name``); a server of a cluster with workers drops
    ``projections`` (and the ``queries`` on their tables)."""
    config = {key: value for key, value in base.items()}
    config["store"] = store
    if transport is not None:
        config["transport"] = transport
    config["grpc"] = {**(base.get("grpc") or {}), "host": "127.0.0.1", "port": grpc_port}
    config["http"] = {**(base.get("http") or {}), "host": "127.0.0.1", "port": http_port}
    config["cluster"] = {
        **(base.get("cluster") or {}),
        "enabled": True,
        "node_id": name,
        "ttl": membership_ttl,
        "advertise": {"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"},
    }
    if role == SERVER and with_workers:  # the workers run (and serve the queries of) these
        config.pop("queries", None)
        config.pop("projections", None)
        config.pop("projectors", None)
        config.pop("sagas", None)
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **value}
        else:
            config[section] = value
    return config


def _load_base(base: dict[str, Any] | Path | None) -> dict[str, Any]:
    if base is None:
        return {}
    if isinstance(base, dict):
        return dict(base)
    import yaml

    try:
        data = yaml.safe_load(Path(base).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read the base config {base}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"the base config {base} is not a mapping")
    return data
