"""``chronik cluster up``: a local development cluster on loopback, stopped with Ctrl-C.

PostgreSQL and NATS (``chronik.testing``'s services) and N ``chronik serve`` servers plus M
projection workers (``chronik.testing.local_cluster``); prints every node's addresses and the
store and transport URLs, then waits for Ctrl-C or SIGTERM and stops everything.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from chronik.cli.common import console, fail
from chronik.errors import ConfigurationError

__all__ = ["SHOP", "up"]

#: the default app: the example shop of chronik's repository (examples/shop/chronik.yaml)
SHOP: dict[str, Any] = {
    "app": "examples.shop.app:build_app",
    "projections": "examples.shop.app:projections",
    "http": {"admin_writes": True},
    "queries": [
        {
            "name": "customer",
            "projection": "customer_summary",
            "table": "customer_summary",
            "params": ["customer_id"],
        },
        {
            "name": "receipts",
            "projection": "receipts",
            "table": "receipts",
            "params": ["customer_id", "transaction_id"],
        },
    ],
}


def up(
    servers: int = typer.Option(2, "--servers", min=1, max=32, help="chronik serve servers"),
    workers: int = typer.Option(
        0, "--workers", min=0, max=32, help="projection workers (they alone run projections)"
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="the app's chronik.yaml (default: the example shop)"
    ),
    directory: Path | None = typer.Option(
        None, "--dir", help="where node configs and logs go (default: a temp dir, removed)"
    ),
    app_dir: Path = typer.Option(
        Path("."), "--app-dir", help="where the config's modules are (default: here)"
    ),
    grace: float = typer.Option(5.0, "--grace", help="seconds in-flight calls get on stop"),
    no_nats: bool = typer.Option(False, "--no-nats", help="no NATS: no transport, no outbox"),
) -> None:
    """Start a local cluster: PostgreSQL and NATS on free loopback ports, then N servers and
    M workers (`chronik serve`, cluster membership on); Ctrl-C or SIGTERM stops everything.

    Needs PostgreSQL 15 and nats-server: apt-get installs them if missing (as root).

    Their data is thrown away on stop; node configs and logs go to --dir.
    """
    from chronik.testing.local_cluster import LocalCluster

    app_dir = app_dir.resolve()
    base: dict[str, Any] | Path = config.resolve() if config is not None else SHOP
    if config is None and not _importable("examples.shop.app", app_dir):
        raise fail(
            ConfigurationError(
                "the default app is the example shop (examples/shop in chronik's repository): "
                "run from the repository's root, pass --app-dir, or pass --config"
            )
        )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    out = console()
    try:
        cluster = LocalCluster(
            servers=servers,
            workers=workers,
            base=base,
            directory=directory.resolve() if directory is not None else None,
            app_dir=app_dir,
            grace=grace,
            nats=not no_nats,
        )
    except Exception as exc:  # a bad base config
        raise fail(exc) from None
    try:
        what = f"{servers} servers, {workers} workers"
        print(f"starting PostgreSQL{'' if no_nats else ', NATS'} and {what} ...", flush=True)
        cluster.start()
        _wait_ready(cluster, stop)
        if not stop.is_set():
            print(describe(cluster), flush=True)
            print("ready: Ctrl-C stops everything", flush=True)
            _watch(cluster, stop)
    except Exception as exc:  # a service or node that cannot start: stop what did
        cluster.stop()
        raise fail(exc) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopping: nodes, then NATS, then PostgreSQL", flush=True)
    problems = cluster.stop()
    for line in problems:
        out.print(f"  {line}", highlight=False)
    print("stopped", flush=True)


def describe(cluster: Any) -> str:
    """What the cluster runs: the store, the transport and each node's addresses and pid."""
    pids = cluster.service_pids()
    lines = [
        f"store:     {cluster.store_url}  (PostgreSQL pid {pids.get('postgresql', '-')})",
        f"transport: {cluster.transport_url or '-'}"
        + (f"  (NATS pid {pids['nats']})" if "nats" in pids else ""),
        f"configs and logs: {cluster.directory}",
    ]
    for node in cluster.nodes.values():
        lines.append(
            f"{node.name:<10} gRPC {node.grpc}  HTTP {node.http}/v1  admin {node.http}/admin"
            f"  pid {node.pid}"
        )
    return "\n".join(lines)


def _importable(module: str, app_dir: Path) -> bool:
    sys.path.insert(0, str(app_dir))
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False
    finally:
        sys.path.remove(str(app_dir))


def _wait_ready(cluster: Any, stop: threading.Event, timeout: float = 180.0) -> None:
    """Wait for every node's /readyz (a Ctrl-C meanwhile stops waiting)."""
    from chronik.testing.local_cluster import NodeFailed

    deadline = time.monotonic() + timeout
    pending = list(cluster.nodes.values())
    while pending and not stop.is_set():
        for node in list(pending):
            if not node.alive:
                raise NodeFailed(f"{node.name} exited:\n{node.log_tail()}")
            if node.ready():
                pending.remove(node)
        if time.monotonic() > deadline:
            names = ", ".join(n.name for n in pending)
            raise NodeFailed(f"not ready within {timeout:g} s: {names}")
        stop.wait(0.2)


def _watch(cluster: Any, stop: threading.Event) -> None:
    """Until Ctrl-C / SIGTERM: say once when a node exits by itself (it is not restarted)."""
    reported: set[str] = set()
    while not stop.wait(1.0):
        for node in cluster.nodes.values():
            if not node.alive and node.name not in reported:
                reported.add(node.name)
                code = None if node.proc is None else node.proc.returncode
                print(f"{node.name} exited with {code}; its log: {node.log}", flush=True)
