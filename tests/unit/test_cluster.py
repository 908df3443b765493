"""Cluster membership on the memory and SQLite stores: join, heartbeat, leave, expiry by the
ttl, the digest and epoch of the live set, the watcher, and typed errors for bad config."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import chronik
from chronik.cluster import ClusterConfig, Membership, members, read_view
from chronik.cluster.store_backend import MEMBERS, StoreMembershipBackend
from chronik.errors import ConfigurationError, TransportUnavailable, ValidationError
from chronik.health import Supervisor
from chronik.store.base import EventStore

TTL = 1.0  # seconds: short, so expiry tests stay quick


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'c.db'}"
    async with chronik.open_store(url) as s:
        yield s


def node(store: EventStore, node_id: str, **kw: object) -> Membership:
    kw.setdefault("ttl", TTL)
    return Membership(store, node_id=node_id, grpc=f"127.0.0.1:{5000 + len(node_id)}", **kw)  # type: ignore[arg-type]


async def test_a_joined_node_is_listed_alive_with_its_record(store: EventStore) -> None:
    """After join, members() lists the node alive with its addresses, version, parts, load."""
    health = Supervisor()
    m = Membership(
        store,
        node_id="node-a",
        grpc="10.0.0.5:50051",
        http="10.0.0.5:8080",
        ttl=TTL,
        health=health,
        parts=lambda: ["outbox dispatcher", "projection:orders"],
        load=lambda: {"inflight_commands": 3},
        version="9.9.9",
    )
    await m.join()
    [a] = await members(store)
    assert (a.node_id, a.grpc, a.http, a.version) == (
        "node-a",
        "10.0.0.5:50051",
        "10.0.0.5:8080",
        "9.9.9",
    )
    assert a.alive and a.state == "alive"
    assert a.parts == ("outbox dispatcher", "projection:orders")
    assert a.load["inflight_commands"] == 3.0 and "loop_lag_s" in a.load
    assert a.incarnation == m.incarnation and a.ttl == TTL and a.lease_epoch == 1
    assert abs(a.last_seen - a.started_at) < 5


async def test_heartbeats_keep_a_node_alive_past_its_ttl(store: EventStore) -> None:
    """A running node renews every ttl/3: after two ttls it is still alive and last seen
    within a ttl, and its record carries the parts it runs now."""
    running = ["projection:a"]
    ttl = 2 * TTL  # a loaded machine may delay one renewal by most of a second
    async with node(store, "node-a", ttl=ttl, parts=lambda: list(running)) as m:
        running.append("deadline scheduler")
        await asyncio.sleep(2 * ttl)
        [a] = await members(store)
        assert a.alive and a.parts == ("deadline scheduler", "projection:a")
        assert m.now_us() / 1e6 - a.last_seen < ttl
        assert m.current is not None and [x.node_id for x in m.current.live] == ["node-a"]


async def test_a_clean_leave_shows_the_node_as_left_at_once(store: EventStore) -> None:
    """stop() releases the lease: the node is no longer alive, and is listed as left."""
    m = node(store, "node-a")
    await m.start()
    await m.stop()
    [a] = await members(store)
    assert not a.alive and a.state == "left"
    assert (await read_view(store)).live == ()


async def test_a_node_that_stops_heartbeating_expires_after_its_ttl(store: EventStore) -> None:
    """A node that never renews (killed) is alive until its ttl passes, then dead; a node
    that keeps heartbeating stays alive."""
    killed = node(store, "node-k")
    await killed.join()  # registered once, no heartbeat task: as if killed right after
    async with node(store, "node-b", ttl=5 * TTL):  # a long lease: a late renewal cannot expire it
        assert {m.node_id for m in await members(store) if m.alive} == {"node-b", "node-k"}
        await asyncio.sleep(TTL + 0.2)
        states = {m.node_id: m.state for m in await members(store)}
        assert states == {"node-b": "alive", "node-k": "dead"}


async def test_gone_nodes_are_forgotten_after_forget_after(store: EventStore) -> None:
    """A dead node is listed for forget_after seconds, then no more; prune deletes its record."""
    await node(store, "node-k").join()
    await asyncio.sleep(TTL + 0.1)
    assert [m.state for m in await members(store, forget_after=60)] == ["dead"]
    assert await members(store, forget_after=0.05) == []
    backend = StoreMembershipBackend(store)
    assert await backend.prune(0.05, await backend.now_us()) == 1
    assert await store.read_table(MEMBERS.name) == []


async def test_digest_and_epoch_change_when_a_node_joins_or_leaves(store: EventStore) -> None:
    """The live set's digest is the same on two nodes that see the same members; a join or a
    leave changes it and grows each watcher's epoch by one."""
    a = node(store, "node-a")
    await a.join()
    first = await a.view()
    again = await a.view()  # nothing changed: the same epoch and digest
    assert first.epoch == again.epoch == 1 and again.digest == first.digest
    b = node(store, "node-b")
    await b.join()
    second = await a.view()
    assert second.epoch == 2 and second.digest != first.digest
    assert (await b.view()).digest == second.digest
    await b.leave()
    third = await a.view()
    assert third.epoch == 3 and third.digest == first.digest
    assert (await read_view(store)).digest == first.digest


async def test_a_restart_with_the_same_id_is_a_change(store: EventStore) -> None:
    """A node that restarts under the same id (new incarnation) changes the digest."""
    a = node(store, "node-a")
    await a.join()
    before = (await read_view(store)).digest
    await a.leave()
    again = node(store, "node-a")
    await again.join()
    after = await read_view(store)
    assert [m.incarnation for m in after.live] == [again.incarnation]
    assert after.digest != before


async def test_changes_yields_the_view_then_each_change(store: EventStore) -> None:
    """changes() yields the current view at once, then a new view when a node joins and when
    one expires, with a growing epoch."""
    # node-a heartbeats all along on a long lease, so a loaded machine that delays its
    # renewal past node-b's short ttl cannot expire it too
    async with node(store, "node-a", ttl=5 * TTL) as a:
        seen = await _watch(store, a)
    assert [ids for _, ids in seen] == [("node-a",), ("node-a", "node-b"), ("node-a",)]
    assert [e for e, _ in seen] == sorted({e for e, _ in seen}) and seen[0][0] >= 1


async def _watch(store: EventStore, a: Membership) -> list[tuple[int, tuple[str, ...]]]:
    """What a's watcher yields while node-b joins once and then expires."""
    seen: list[tuple[int, tuple[str, ...]]] = []

    async def watch() -> None:
        async for view in a.changes(interval=0.05):
            seen.append((view.epoch, tuple(m.node_id for m in view.live)))
            if len(seen) == 3:
                return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    await node(store, "node-b").join()  # joins once and never renews: expires after TTL
    async with asyncio.timeout(5):
        await watcher
    return seen


async def test_a_second_live_node_with_the_same_id_is_refused(store: EventStore) -> None:
    """Two live nodes cannot share an id: the second join fails with ConfigurationError."""
    async with node(store, "twin"):
        with pytest.raises(ConfigurationError, match="twin"):
            await node(store, "twin").join()


async def test_an_empty_store_has_no_members(store: EventStore) -> None:
    """Reading a store where no node ever registered lists nobody (no table is created)."""
    view = await read_view(store)
    assert view.members == () and view.live == () and view.epoch == 0


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"ttl": 0}, "cluster.ttl"),
        ({"ttl": float("nan")}, "cluster.ttl"),
        ({"ttl": 1e9}, "cluster.ttl"),
        ({"node_id": "bad id!"}, "cluster.node_id"),
        ({"node_id": ""}, "cluster.node_id"),
        ({"advertise": {"grpc": "no-port"}}, "cluster.advertise.grpc"),
        ({"advertise": {"http": "host:70000"}}, "cluster.advertise.http"),
        ({"forget_after": -1}, "cluster.forget_after"),
    ],
)
def test_bad_cluster_config_is_a_validation_error_naming_the_field(
    config: dict[str, object], field: str
) -> None:
    """Each bad value of the cluster section is refused with a ValidationError naming it."""
    parsed = msgspec.convert(config, ClusterConfig)
    with pytest.raises(ValidationError) as err:
        parsed.check()
    assert err.value.field == field


def test_bad_membership_arguments_are_typed_errors() -> None:
    """Membership refuses a bad node id, address or ttl with a ValidationError naming it."""
    store = chronik.open_store("memory://")
    for kwargs, field in [
        ({"node_id": "a b"}, "node_id"),
        ({"grpc": "x"}, "grpc"),
        ({"ttl": 0.01}, "ttl"),
        ({"poll_interval": 0.0}, "poll_interval"),
    ]:
        with pytest.raises(ValidationError) as err:
            Membership(store, **kwargs)  # type: ignore[arg-type]
        assert err.value.field == field


def test_a_generated_node_id_is_valid_and_fresh() -> None:
    """Without a node id, each Membership gets a different valid one."""
    store = chronik.open_store("memory://")
    a, b = Membership(store), Membership(store)
    assert a.node_id != b.node_id and ClusterConfig(node_id=a.node_id).check()


def test_the_docs_cluster_config_is_valid() -> None:
    """The cluster section the deployment guide shows loads and passes the checks."""
    from chronik.server.config import load_config

    path = Path(__file__).resolve().parents[2] / "docs" / "snippets" / "library-cluster.yaml"
    cluster = load_config(path).cluster.check()
    assert cluster.enabled and cluster.node_id == "node-a" and cluster.ttl == 10
    assert cluster.advertise.grpc == "node-a.internal:50051"


async def test_stop_leaves_even_when_the_last_round_fails_as_it_is_cancelled(
    store: EventStore,
) -> None:
    """A heartbeat round that turns its cancellation into an error (a read that times out as
    it is cancelled) does not make stop() raise: the node still leaves."""
    m = node(store, "node-a")
    await m.start()
    entered = asyncio.Event()

    async def failing_read(*args: object) -> Any:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise TransportUnavailable("reading the members timed out") from None
        raise AssertionError("not reached")

    m.backend.read = failing_read  # type: ignore[method-assign]
    async with asyncio.timeout(5):
        await entered.wait()  # the next round is inside the read
    await m.stop()
    [a] = await members(store)
    assert a.state == "left" and not m.joined
