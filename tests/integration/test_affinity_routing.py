"""Command routing by aggregate affinity across three real gRPC nodes on one PostgreSQL: each
node is what `chronik serve` builds with `cluster: {routing: affinity}` (GrpcServer, the
cluster section's Membership and CommandRouter through serve_membership / join_cluster), in
this process. Commands sent to a non-owner are handled by the owner; the deadline travels;
retries are deduplicated; a stopped owner's commands fall back, then move; mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import msgspec
import pytest

import chronik
from chronik.cluster import ClusterConfig, Membership
from chronik.cluster.ring import HashRing, key_of
from chronik.commands import CommandResult
from chronik.errors import (
    AuthenticationError,
    CommandRejected,
    ConfigurationError,
    ServiceUnavailable,
    ValidationError,
    WrongExpectedVersion,
)
from chronik.sdk import Client, ClientTLS
from chronik.server.auth import ApiKey, Auth
from chronik.server.cluster import join_cluster, serve_membership
from chronik.server.forwarding import CLUSTER_SECRET_KEY, FORWARDED_BY_KEY, CommandRouter
from chronik.server.grpc import GrpcServer
from chronik.server.http import create_http_app
from chronik.server.http_server import HttpServer
from chronik.server.limits import Limiter
from chronik.server.routing import router_of
from chronik.server.tls import TlsConfig
from chronik.server.wire import command_to_wire
from chronik.testing.certificates import TestCA
from chronik.testing.services import free_port
from chronik.v1 import chronik_pb2_grpc as rpc

ROOT = Path(__file__).resolve().parents[2]
TTL = 1.0
NAMES = ("node-1", "node-2", "node-3")
SECRET = "cluster-secret-0123456789"
registry = chronik.EventRegistry()


@registry.event()
class Deposited(msgspec.Struct):
    amount: int


class Deposit(msgspec.Struct):
    amount: int


class Slow(msgspec.Struct):
    seconds: float


def decide(command: chronik.Command, state: dict[str, Any]) -> list[Deposited]:
    if isinstance(command.payload, Slow):
        return [Deposited(0)]
    assert isinstance(command.payload, Deposit)
    if command.payload.amount <= 0:
        raise CommandRejected(f"amount must be positive, got {command.payload.amount}")
    return [Deposited(command.payload.amount)]


async def slow_down(command: chronik.Command, state: Any, call_next: Any) -> Any:
    """A slow handler: ``Slow`` takes its seconds before deciding."""
    if isinstance(command.payload, Slow):
        await asyncio.sleep(command.payload.seconds)
    return await call_next(command, state)


def evolve(state: dict[str, Any], event: Deposited) -> dict[str, Any]:
    return {"balance": state.get("balance", 0) + event.amount}


@dataclass
class Node:
    """One in-process `chronik serve` node: its app, gRPC server, membership and router."""

    name: str
    app: chronik.Chronik
    server: GrpcServer
    leave: Callable[[], Awaitable[None]]
    #: the aggregates whose commands this node's bus handled (after routing)
    handled: list[str] = field(default_factory=list)

    @property
    def router(self) -> CommandRouter:
        router = router_of(self.app)
        assert isinstance(router, CommandRouter)
        return router

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.leave()
        await self.server.stop(0.5)


async def start_node(
    url: str,
    name: str,
    *,
    auth: Auth | None = None,
    tls: TlsConfig | None = None,
    secret: str | None = None,
) -> Node:
    """A node as `chronik serve` makes it with `cluster: {enabled, routing: affinity}`."""
    app = chronik.Chronik(url, registry=registry)
    app.add_decider("account", decide, evolve, dict, commands={"Deposit": Deposit, "Slow": Slow})
    app.use_handler(slow_down)
    server = GrpcServer(app, port=0, auth=auth, tls=tls)
    await server.start()
    config = ClusterConfig(enabled=True, node_id=name, ttl=TTL, routing="affinity", secret=secret)
    membership = serve_membership(config, app, server, Limiter(), {})
    leave = await join_cluster(config, app, membership, None)
    node = Node(name, app, server, leave)

    async def count(command: chronik.Command, call_next: Any) -> CommandResult:
        node.handled.append(command.aggregate_id)
        result: CommandResult = await call_next(command)
        return result

    app.use(count)  # inside the router: sees only what this node handles itself
    return node


async def until_live(nodes: list[Node], count: int, seconds: float = 20.0) -> None:
    """Wait until every node's view has ``count`` live members."""
    deadline = time.monotonic() + seconds
    while True:
        views = [await n.router.membership.view() for n in nodes]
        if all(len(v.live) == count for v in views):
            return
        assert time.monotonic() < deadline, [len(v.live) for v in views]
        await asyncio.sleep(0.1)


def owned_by(node: str, among: tuple[str, ...] = NAMES, n: int = 1, tag: str = "acc") -> list[str]:
    """``n`` aggregate ids that ``node`` owns on the ring of ``among``."""
    ring = HashRing(among)
    found = [
        f"{tag}-{i}"
        for i in range(10_000)
        if ring.owner(key_of("", "account", f"{tag}-{i}")) == node
    ]
    return found[:n]


def deposit(aggregate_id: str, amount: int = 5, **fields: Any) -> chronik.Command:
    return chronik.Command(
        domain="account",
        aggregate_id=aggregate_id,
        type="Deposit",
        payload={"amount": amount},
        **fields,
    )


@pytest.fixture
async def nodes(postgres_url: str) -> AsyncIterator[list[Node]]:
    """Three nodes with routing by affinity on one PostgreSQL database, all seeing each other."""
    started = [await start_node(postgres_url, name) for name in NAMES]
    try:
        await until_live(started, 3)
        yield started
    finally:
        for node in started:
            await node.stop()


async def test_a_command_sent_to_a_non_owner_is_handled_by_its_owner(nodes: list[Node]) -> None:
    """Commands sent to node-1 over gRPC and HTTP for node-2's aggregate run on node-2 (its
    bus, its cache); node-1's own aggregate stays local; counters and metrics say so; a retry
    of a forwarded command id through any node returns the original result."""
    n1, n2, n3 = nodes
    (theirs,) = owned_by("node-2")
    (mine,) = owned_by("node-1")
    async with Client(n1.address, timeout=10) as c1:
        results = [await c1.dispatch(deposit(theirs, i + 1)) for i in range(5)]
        assert [r.version for r in results] == [0, 1, 2, 3, 4]
        assert [r.events[0].json() for r in results] == [{"amount": i + 1} for i in range(5)]
        assert (await c1.dispatch(deposit(mine))).version == 0
    assert n2.handled == [theirs] * 5 and n1.handled == [mine] and n3.handled == []
    assert (n1.router.stats.forwarded, n1.router.stats.local) == (5, 1)
    assert n2.router.stats.received == 5 and n2.router.stats.forwarded == 0
    assert n1.router.channels == {"node-2": n2.address}  # one kept channel, none to node-3
    # the owner's cache holds the aggregate (a load returns the cached state itself); the
    # non-owner never loaded it (each load reads the store afresh)
    stream = deposit(theirs).stream
    for node, cached in ((n2, True), (n1, False)):
        repo, model = node.app.bus.repository, node.app.bus.model("account")
        first_load, second_load = await repo.load(model, stream), await repo.load(model, stream)
        assert first_load.version == 4 and (first_load is second_load) is cached

    http = HttpServer(create_http_app(n1.app), port=0)
    await http.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as h:
            body = {"domain": "account", "aggregate_id": theirs, "type": "Deposit"}
            r = await h.post("/v1/commands", json={**body, "payload": {"amount": 7}})
            assert r.status_code == 200, r.text
            assert r.json()["version"] == 5 and n2.handled[-1] == theirs
            rejected = await h.post("/v1/commands", json={**body, "payload": {"amount": -1}})
            assert rejected.status_code == 422, rejected.text
            assert "amount must be positive" in rejected.text
            metrics = (await h.get("/metrics")).text
            assert "chronik_routing_forwarded_total 7.0" in metrics, metrics
    finally:
        await http.stop()

    first = await Client(n1.address).dispatch(deposit(theirs, 9, command_id="cmd-once"))
    assert not first.duplicate and first.version == 6
    for node in nodes:  # the same id again through each node: the original result, once
        async with Client(node.address) as c:
            again = await c.dispatch(deposit(theirs, 9, command_id="cmd-once"))
        assert again.duplicate and again.events == first.events and again.command_id == "cmd-once"
    events = [e async for e in n3.app.store.read_stream(deposit(theirs).stream)]
    assert len(events) == 7


async def test_the_owners_errors_come_back_unchanged(nodes: list[Node]) -> None:
    """A rejection and a wrong expected version raised by the owner reach the caller of the
    non-owner as the same typed errors with their fields and status codes."""
    n1 = nodes[0]
    (theirs,) = owned_by("node-3")
    async with Client(n1.address) as c:
        with pytest.raises(CommandRejected) as rejected:
            await c.dispatch(deposit(theirs, -3))
        assert rejected.value.reason == "amount must be positive, got -3"
        await c.dispatch(deposit(theirs))
        with pytest.raises(WrongExpectedVersion) as conflict:
            await c.dispatch(deposit(theirs, expected_sequence=7))
        assert conflict.value.actual == 0 and conflict.value.expected == 7
    async with grpc.aio.insecure_channel(n1.address) as channel:
        stub = rpc.CommandGatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await stub.Handle(command_to_wire(deposit(theirs, -3)), timeout=10)
        assert raw.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        trailers = dict(raw.value.trailing_metadata() or ())
        assert trailers["chronik-error"] == "CommandRejected"
    assert nodes[2].handled == [theirs] * 4 and n1.handled == []
    with pytest.raises(ValidationError):  # a payload no wire can carry: refused here, typed
        await n1.app.dispatch(deposit(theirs, object()))  # type: ignore[arg-type]
    assert n1.handled == [theirs] and n1.router.stats.forwarded == 4


async def test_the_callers_deadline_travels_with_the_forwarded_command(nodes: list[Node]) -> None:
    """A slow handler on the owner and a 0.5 s deadline: the caller gets DEADLINE_EXCEEDED,
    and the owner's call ends at that deadline too (nothing is appended after it)."""
    n1, n2 = nodes[0], nodes[1]
    (theirs,) = owned_by("node-2")
    slow = chronik.Command(
        domain="account", aggregate_id=theirs, type="Slow", payload={"seconds": 2.0}
    )
    async with grpc.aio.insecure_channel(n1.address) as channel:
        stub = rpc.CommandGatewayStub(channel)
        began = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Handle(command_to_wire(slow), timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - began < 1.5
    assert n2.handled == [theirs]  # it reached the owner
    await asyncio.sleep(2.0)  # the handler would have finished by now, had the hop no deadline
    assert [e async for e in n2.app.store.read_stream(slow.stream)] == []
    async with Client(n1.address) as c:  # the SDK: the same, as its typed error
        with pytest.raises(ServiceUnavailable, match="no answer in time"):
            await c.dispatch(slow, timeout=0.3)


async def test_a_stopped_owner_falls_back_then_moves_and_nothing_is_lost_or_doubled(
    nodes: list[Node],
) -> None:
    """node-2 stops serving without leaving (like kill -9): node-1 and node-3 handle its
    aggregates themselves (fallbacks) until its lease expires, then forward to the new owners;
    under concurrent commands from both, every acknowledged command is one event, and every
    retry is a duplicate."""
    n1, n2, n3 = nodes
    hot = owned_by("node-2", n=6)
    await n2.app.health.stop_task("cluster membership")  # no more heartbeats, no leave
    await n2.server.stop(0)
    sent: list[tuple[chronik.Command, CommandResult]] = []

    async def send(node: Node, tag: str, until: float) -> None:
        async with Client(node.address, timeout=10, retries=0) as c:
            i = 0
            while time.monotonic() < until:
                command = deposit(random.choice(hot), command_id=f"{tag}-{i}")
                sent.append((command, await c.dispatch(command)))
                i += 1

    until = time.monotonic() + 2.5 * TTL
    await asyncio.gather(send(n1, "a", until), send(n3, "b", until))
    fallbacks = n1.router.stats.fallbacks + n3.router.stats.fallbacks
    assert fallbacks > 0
    await until_live([n1, n3], 2)
    moved_before = n1.router.stats.forwarded + n3.router.stats.forwarded
    await asyncio.gather(
        send(n1, "c", time.monotonic() + 0.5), send(n3, "d", time.monotonic() + 0.5)
    )
    assert n1.router.stats.fallbacks + n3.router.stats.fallbacks == fallbacks  # none after the move
    ring = HashRing(("node-1", "node-3"))
    new_owner = {a: ring.owner(key_of("", "account", a)) for a in hot}
    late = [c for c, _ in sent if c.command_id and c.command_id[0] in "cd"]
    assert late and n1.router.stats.forwarded + n3.router.stats.forwarded > moved_before
    for command in late:  # handled by the new owner only
        owner = n1 if new_owner[command.aggregate_id] == "node-1" else n3
        assert command.aggregate_id in owner.handled
    stored = [
        e for a in hot async for e in n1.app.store.read_stream(chronik.StreamId("account", a))
    ]
    assert len(stored) == len(sent) == len({c.command_id for c, _ in sent})
    assert sorted(e.metadata.causation_id or "" for e in stored) == sorted(
        c.command_id or "" for c, _ in sent
    )
    async with Client(n1.address) as c:  # retried through a survivor: duplicates, nothing new
        for command, result in random.sample(sent, min(20, len(sent))):
            again = await c.dispatch(command)
            assert again.duplicate and again.events == result.events
    assert len(
        [e for a in hot async for e in n3.app.store.read_stream(chronik.StreamId("account", a))]
    ) == len(stored)


async def test_an_owner_that_holds_its_port_but_never_answers_is_skipped(
    nodes: list[Node],
) -> None:
    """A live member whose gRPC port accepts connections but never speaks (a frozen process):
    commands it owns are handled by the receiving node after the 1 s connect wait, well within
    the caller's deadline, and counted as fallbacks."""
    n1 = nodes[0]
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # the kernel completes the handshakes; nobody ever reads
    address = f"127.0.0.1:{hung.getsockname()[1]}"
    frozen = Membership(n1.app.store, node_id="node-0", grpc=address, ttl=30)
    await frozen.join()
    try:
        await until_live(nodes, 4)
        (theirs,) = owned_by("node-0", ("node-0", *NAMES))
        began = time.monotonic()
        async with Client(n1.address, retries=0) as c:
            result = await c.dispatch(deposit(theirs), timeout=10)
        assert result.version == 0 and n1.handled == [theirs]
        assert 0.5 < time.monotonic() - began < 5  # the connect wait, not the deadline
        assert n1.router.stats.fallbacks == 1 and n1.router.stats.forwarded == 0
    finally:
        await frozen.leave()
        hung.close()


async def test_nodes_forward_over_mutual_tls_with_the_cluster_secret(
    tmp_path: Path, postgres_url: str
) -> None:
    """With gRPC TLS requiring client certificates and API-key auth, a node forwards with its
    own certificate and the cluster secret; a call claiming to be forwarded without the secret
    is UNAUTHENTICATED; auth without a secret is refused at start naming cluster.secret."""
    ca = TestCA(tmp_path / "ca")
    auth = Auth([ApiKey(name="teller", key="teller-key-1", commands={"account": "*"})])
    tls = {}
    for name in NAMES[:2]:
        issued = ca.issue(name, node=True)
        tls[name] = TlsConfig(
            cert=str(issued.cert),
            key=str(issued.key),
            client_ca=str(ca.cert),
            require_client_cert=True,
        )
    started = [
        await start_node(postgres_url, name, auth=auth, tls=tls[name], secret=SECRET)
        for name in NAMES[:2]
    ]
    try:
        await until_live(started, 2)
        n1, n2 = started
        assert n1.router.tls is not None and n1.router.tls.cert == tls["node-1"].cert
        (theirs,) = owned_by("node-2", NAMES[:2])
        client_cert = ca.issue("teller", client=True)
        client_tls = ClientTLS(
            ca=str(ca.cert), cert=str(client_cert.cert), key=str(client_cert.key)
        )
        async with Client(n1.address, api_key="teller-key-1", tls=client_tls) as c:
            result = await c.dispatch(deposit(theirs))
        assert result.version == 0 and n2.handled == [theirs] and n1.router.stats.forwarded == 1
        credentials = client_tls.credentials()
        async with grpc.aio.secure_channel(n2.address, credentials) as channel:
            stub = rpc.CommandGatewayStub(channel)
            for metadata in (
                ((FORWARDED_BY_KEY, "node-1"),),
                ((FORWARDED_BY_KEY, "node-1"), (CLUSTER_SECRET_KEY, "not-the-secret-000000")),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Handle(
                        command_to_wire(deposit(theirs)), metadata=metadata, timeout=10
                    )
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert n2.handled == [theirs]
    finally:
        for node in started:
            await node.stop()
    app = chronik.Chronik("memory://")
    server = GrpcServer(app, port=1, auth=auth)  # not started
    config = ClusterConfig(enabled=True, node_id="node-x", routing="affinity")
    with pytest.raises(ConfigurationError, match=r"cluster\.secret"):
        serve_membership(config, app, server, Limiter(), {})
    assert router_of(app) is None


def test_a_forged_marker_without_a_router_is_not_trusted() -> None:
    """accept() with a secret refuses a marker without it; without a marker it is no
    forwarded call; a node without a router never looks at the marker (normal auth)."""

    class _Membership:
        node_id = "me"
        current = None

    router = CommandRouter(_Membership(), secret=SECRET)  # type: ignore[arg-type]
    assert router.accept(()) is False
    assert router.accept(((FORWARDED_BY_KEY, "x"), (CLUSTER_SECRET_KEY, SECRET))) is True
    with pytest.raises(AuthenticationError):
        router.accept(((FORWARDED_BY_KEY, "x"),))
    open_router = CommandRouter(_Membership())  # type: ignore[arg-type]
    assert open_router.accept(((FORWARDED_BY_KEY, "x"),)) is True
    assert router_of(chronik.Chronik("memory://")) is None


APP_MODULE = """
import msgspec
import chronik

registry = chronik.EventRegistry()


@registry.event()
class Deposited(msgspec.Struct):
    amount: int


class Deposit(msgspec.Struct):
    amount: int


def build_app(store):
    app = chronik.Chronik(store, registry=registry)
    app.add_decider(
        "account",
        lambda c, s: [Deposited(c.payload.amount)],
        lambda s, e: {"n": s.get("n", 0) + 1},
        dict,
        commands={"Deposit": Deposit},
    )
    return app
"""


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_chronik_serve_routes_by_affinity_from_its_config(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two `chronik serve` processes with `cluster.routing: affinity`: a command sent to the
    non-owner over gRPC and over HTTP is handled by the owner (its metrics say received, the
    other's forwarded), and the member records carry the counters."""
    (tmp_path / "affinity_app.py").write_text(APP_MODULE)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}", "CHRONIK_STORE": ""}
    ports = {name: (free_port(), free_port()) for name in NAMES[:2]}
    procs = []
    for name, (grpc_port, http_port) in ports.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            f"store: {postgres_url}\napp: affinity_app:build_app\n"
            f"grpc: {{host: 127.0.0.1, port: {grpc_port}}}\n"
            f"http: {{host: 127.0.0.1, port: {http_port}}}\n"
            f"cluster: {{enabled: true, node_id: {name}, ttl: {TTL}, routing: affinity}}\n"
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "chronik.cli", "serve", "--config", str(path)],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        (g1, h1), (_, h2) = ports["node-1"], ports["node-2"]

        def live(port: int) -> bool:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/cluster", timeout=5)
            except httpx.HTTPError:
                return False
            return r.status_code == 200 and r.json()["live"] == 2

        deadline = time.monotonic() + 90
        while not (live(h1) and live(h2)):
            assert time.monotonic() < deadline, "the nodes did not see each other"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.2)
        (theirs,) = owned_by("node-2", NAMES[:2])

        async def send() -> CommandResult:
            async with Client(f"127.0.0.1:{g1}") as c:
                return await c.dispatch(deposit(theirs))

        assert asyncio.run(send()).version == 0
        body = {"domain": "account", "aggregate_id": theirs, "type": "Deposit"}
        r = httpx.post(
            f"http://127.0.0.1:{h1}/v1/commands", json={**body, "payload": {"amount": 2}}
        )
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        assert _metric(h1, "chronik_routing_forwarded_total") == 2
        assert _metric(h2, "chronik_routing_received_total") == 2
        assert _metric(h1, "chronik_routing_fallbacks_total") == 0
        deadline = time.monotonic() + 30
        while True:  # the counters reach the member records with the next heartbeat
            view = httpx.get(f"http://127.0.0.1:{h2}/v1/cluster", timeout=5).json()
            load = {m["node_id"]: m["load"] for m in view["members"]}
            if (
                load["node-1"].get("forwarded") == 2
                and load["node-2"].get("forwarded_received") == 2
            ):
                break
            assert time.monotonic() < deadline, load
            time.sleep(0.2)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        outs = [proc.communicate(timeout=60) for proc in procs]
    assert all("routing: by aggregate affinity (forwarding over plaintext" in o for o, _ in outs)
    assert all(proc.returncode == 0 for proc in procs), outs
