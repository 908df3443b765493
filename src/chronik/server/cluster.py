"""``chronik serve``'s cluster membership: what the node advertises, runs and carries.

``build_membership`` makes the node's Membership from the ``cluster`` config section
(addresses default to the bound ones); ``start_membership`` joins, runs the heartbeat as the
supervised task ``cluster membership`` (visible in health) and returns the step that leaves
on shutdown. ``parts_of`` says what the node runs now: the projections (and
partitions) it holds leases for, the outbox dispatcher while it holds its lease, the deadline
scheduler. Imports chronik's core and the cluster package, never the HTTP stack.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from chronik.cluster import ClusterConfig, Membership
from chronik.cluster.config import check_address

__all__ = [
    "advertised",
    "build_membership",
    "join_cluster",
    "parts_of",
    "serve_membership",
    "start_membership",
]


def advertised(configured: str | None, host: str, port: int | None) -> str:
    """The address to advertise: as configured, else the bound one (the host name when
    bound to every interface), "" when nothing is served."""
    if configured is not None:
        return configured
    if port is None:
        return ""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parts_of(runners: Iterable[Any], health: Any, outbox: Any = None) -> list[str]:
    """What this node runs now: ``projection:<name>`` (``/<partition>`` for a partitioned
    one) for each lease its processors hold, ``outbox dispatcher`` while it holds the
    outbox lease, ``deadline scheduler`` while that task runs."""
    out = []
    for runner in runners:
        for name, proc in runner.processors.items():
            if proc.epoch is not None:
                out.append(f"projection:{name}")
        for name, worker in runner.workers.items():
            out += [f"projection:{name}/{p.partition}" for p in worker.processors if p.epoch]
    if outbox is not None and outbox.active:
        out.append("outbox dispatcher")
    task = health.tasks.get("deadline scheduler")
    if task is not None and task.state == "running":
        out.append("deadline scheduler")
    return out


def build_membership(
    config: ClusterConfig,
    app: Any,
    *,
    grpc: str,
    parts: Callable[[], Iterable[str]],
    load: Callable[[], dict[str, float]] | None = None,
) -> Membership:
    """The node's Membership from the checked ``cluster`` section (not joined yet; its
    ``http`` address is set once HTTP is bound)."""
    config.check()
    return Membership(
        app.store,
        node_id=config.node_id,
        grpc=grpc,
        ttl=config.ttl,
        forget_after=config.forget_after,
        health=app.health,
        parts=parts,
        load=load,
    )


async def start_membership(membership: Membership, app: Any) -> Callable[[], Awaitable[None]]:
    """Join the cluster and heartbeat as the supervised task ``cluster membership`` of
    ``app.health``; the step that stops the heartbeat and leaves."""
    await membership.join()
    app.health.supervise("cluster membership", membership.run)

    async def leave_cluster() -> None:
        await app.health.stop_task("cluster membership")
        await membership.leave()

    return leave_cluster


def serve_membership(
    config: ClusterConfig, app: Any, server: Any, limiter: Any, found: dict[str, Any]
) -> Membership:
    """``chronik serve``'s Membership (not joined yet): gRPC as bound, the parts it runs
    (``found["outbox"]``: its outbox dispatcher, once started) and its load."""

    def parts() -> list[str]:
        runners = [r for r in (app.runner, server.runner) if r is not None]
        return parts_of(runners, app.health, found.get("outbox"))

    def load() -> dict[str, float]:
        return {"inflight_commands": limiter.inflight_commands} if limiter.active else {}

    grpc = advertised(config.advertise.grpc, server.host, server.port)
    return build_membership(config, app, grpc=grpc, parts=parts, load=load)


async def join_cluster(
    config: ClusterConfig, app: Any, membership: Membership, http: Any
) -> Callable[[], Awaitable[None]]:
    """Join (HTTP as bound, if it serves) and say so; the step that leaves on shutdown."""
    port = None if http is None else http.port
    host = "" if http is None else http.host
    membership.http = check_address(
        advertised(config.advertise.http, host, port), "cluster.advertise.http"
    )
    leave = await start_membership(membership, app)
    print(
        f"  cluster: node {membership.node_id} (ttl {membership.ttl:g} s, "
        f"advertising gRPC {membership.grpc or '-'}, HTTP {membership.http or '-'})",
        flush=True,
    )
    return leave
