"""``chronik serve``'s cluster membership: what the node advertises, runs and carries.

``build_membership`` makes the node's Membership from the ``cluster`` config section
(addresses default to the bound ones); ``start_membership`` joins, runs the heartbeat as the
supervised task ``cluster membership`` (visible in health) and returns the step that leaves
on shutdown. ``parts_of`` says what the node runs now: the projections (and
partitions) it holds leases for, the outbox dispatcher while it holds its lease, the deadline
scheduler. With ``cluster.backend: nats`` the members register in a JetStream KV bucket
(``membership_backend``; its connection is closed after the node leaves). With
``cluster.routing: affinity``, ``route_by_affinity`` installs the node's
CommandRouter (``chronik.server.forwarding``), closed before the node leaves. Imports
chronik's core and the cluster package, never the HTTP stack.
"""

from __future__ import annotations

import socket
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from chronik.cluster import ClusterConfig, Membership, MembershipBackend
from chronik.cluster.config import check_address
from chronik.errors import ConfigurationError
from chronik.server.routing import router_of

__all__ = [
    "advertised",
    "build_membership",
    "join_cluster",
    "membership_backend",
    "membership_of",
    "parts_of",
    "route_by_affinity",
    "serve_membership",
    "start_membership",
]


_MEMBERSHIPS: weakref.WeakKeyDictionary[Any, Membership] = weakref.WeakKeyDictionary()


def membership_of(app: Any) -> Membership | None:
    """The Membership ``chronik serve`` runs for ``app`` (None: the node is in no cluster);
    pages that show the members read through it, whichever backend it registers in."""
    return _MEMBERSHIPS.get(app)


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


def parts_of(
    runners: Iterable[Any], health: Any, outbox: Any = None, scheduler: Any = None
) -> list[str]:
    """What this node runs now: ``projection:<name>`` (``/<partition>`` for a partitioned
    one) for each lease its processors hold, ``outbox dispatcher`` while it holds the
    outbox lease, ``deadline scheduler`` while that task runs and ``deadlines:<owner>`` for
    each owner table whose deadline lease it held at its last round."""
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
        out += [f"deadlines:{owner}" for owner in getattr(scheduler, "holding", ())]
    return out


def membership_backend(config: ClusterConfig, app: Any, transport: str | None = None) -> Any:
    """Where the members register: the store (``cluster.backend: store``), or a JetStream KV
    bucket on ``cluster.nats_url`` (default: ``transport`` when it is a NATS URL)."""
    config.check()
    if config.backend != "nats":
        return app.store
    url = config.nats_server(transport)
    from chronik.cluster.nats_backend import NatsMembershipBackend

    return NatsMembershipBackend(url, config.nats_bucket)


def build_membership(
    config: ClusterConfig,
    app: Any,
    *,
    grpc: str,
    parts: Callable[[], Iterable[str]],
    load: Callable[[], dict[str, float]] | None = None,
    transport: str | None = None,
) -> Membership:
    """The node's Membership from the checked ``cluster`` section (not joined yet; its
    ``http`` address is set once HTTP is bound); ``transport``: the node's transport URL."""
    config.check()
    return Membership(
        membership_backend(config, app, transport),
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
    try:
        await membership.join()
    except BaseException:
        await _close_backend(membership.backend)
        raise
    app.health.supervise("cluster membership", membership.run)

    async def leave_cluster() -> None:
        await app.health.stop_task("cluster membership")
        try:
            await membership.leave()
        finally:
            await _close_backend(membership.backend)

    return leave_cluster


def serve_membership(
    config: ClusterConfig,
    app: Any,
    server: Any,
    limiter: Any,
    found: dict[str, Any],
    transport: str | None = None,
) -> Membership:
    """``chronik serve``'s Membership (not joined yet): gRPC as bound, the parts it runs
    (``found["outbox"]``: its outbox dispatcher, ``found["deadlines"]`` its deadline
    scheduler, once started) and its load; ``transport``:
    the configured transport URL (the NATS server of ``cluster.backend: nats`` by default)."""

    def parts() -> list[str]:
        runners = [r for r in (app.runner, server.runner) if r is not None]
        return parts_of(runners, app.health, found.get("outbox"), found.get("deadlines"))

    def load() -> dict[str, float]:
        found = {"inflight_commands": limiter.inflight_commands} if limiter.active else {}
        router = router_of(app)  # with routing: affinity, how it routed (counters)
        return found if router is None else {**found, **router.stats.as_dict()}

    grpc = advertised(config.advertise.grpc, server.host, server.port)
    membership = build_membership(
        config, app, grpc=grpc, parts=parts, load=load, transport=transport
    )
    if config.routing == "affinity":
        route_by_affinity(config, app, server, membership)
    _MEMBERSHIPS[app] = membership
    return membership


def route_by_affinity(config: ClusterConfig, app: Any, server: Any, membership: Membership) -> Any:
    """Install the CommandRouter of ``cluster.routing: affinity`` on ``app``: over mutual TLS
    when gRPC serves TLS (the node's certificate, trusting ``grpc.tls.client_ca``), with the
    cluster secret (required when auth is configured)."""
    from chronik.server.forwarding import install_router

    secret = config.cluster_secret()
    if secret is None and server.auth is not None:
        raise ConfigurationError(
            "cluster.secret: required with auth and cluster.routing: affinity (the "
            "credential nodes present on the commands they forward; or cluster.secret_env)"
        )
    tls = None if server.tls is None else server.tls.as_client(where="grpc.tls")
    return install_router(app, membership, tls=tls, secret=secret)


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
    router = router_of(app)
    if router is not None:  # cluster.routing: affinity: stop forwarding, then leave
        leave = _closing(router, leave)
        print(f"  routing: by aggregate affinity ({_how(router)})", flush=True)
    print(
        f"  cluster: node {membership.node_id} (ttl {membership.ttl:g} s, "
        f"advertising gRPC {membership.grpc or '-'}, HTTP {membership.http or '-'})",
        flush=True,
    )
    return leave


async def _close_backend(backend: MembershipBackend) -> None:
    """Close a membership backend that owns a connection (NATS); the store is the app's."""
    close = getattr(backend, "close", None)
    if close is not None:
        await close()


def _closing(router: Any, leave: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def leave_cluster() -> None:
        await router.close()
        await leave()

    return leave_cluster


def _how(router: Any) -> str:
    tls = "mutual TLS" if router.tls is not None else "plaintext"
    secret = "cluster secret" if router.has_secret else "no cluster secret"
    return f"forwarding over {tls}, {secret}"
