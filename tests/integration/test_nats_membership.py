"""Cluster membership in a NATS JetStream KV bucket, on a real nats-server: the conformance
suite, two nodes seeing each other, expiry, leave, a NATS restart, config and the CLI."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chronik.cluster import ClusterConfig, Membership, read_view
from chronik.cluster.backend import MembershipBackend
from chronik.cluster.nats_backend import NatsMembershipBackend
from chronik.errors import ConfigurationError, LeaseHeld, TransportUnavailable
from chronik.health import Supervisor
from chronik.testing.brokers import NatsService
from chronik.testing.conformance_membership import TTL, MembershipConformance

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
async def opened(nats_url: str) -> AsyncIterator[Callable[..., NatsMembershipBackend]]:
    """Backends on a fresh bucket of the session's server, closed after the test."""
    made: list[NatsMembershipBackend] = []
    bucket = f"members_{uuid.uuid4().hex[:12]}"

    def make(url: str = nats_url) -> NatsMembershipBackend:
        made.append(NatsMembershipBackend(url, bucket))
        return made[-1]

    yield make
    for backend in made:
        await backend.close()


class TestNatsMembershipBackend(MembershipConformance):
    """NatsMembershipBackend passes the membership conformance suite."""

    @pytest.fixture
    def backends(
        self, opened: Callable[..., NatsMembershipBackend]
    ) -> Callable[[], MembershipBackend]:
        return opened


def node(backend: MembershipBackend, node_id: str) -> Membership:
    return Membership(backend, node_id=node_id, grpc=f"127.0.0.1:{5000 + len(node_id)}", ttl=TTL)


async def test_two_nodes_see_each_other_then_one_dies_and_one_leaves(
    opened: Callable[..., NatsMembershipBackend],
) -> None:
    """Two Memberships on one bucket see each other alive with the same digest; a node that
    stops heartbeating is dead after its ttl, one that leaves is left at once."""
    a, b, c = node(opened(), "node-a"), node(opened(), "node-b"), node(opened(), "node-c")
    async with a, b:
        await c.join()  # joins once, never renews: as if killed
        va, vb = await a.view(), await b.view()
        assert [m.node_id for m in va.live] == ["node-a", "node-b", "node-c"]
        assert va.digest == vb.digest
        await asyncio.sleep(TTL + 0.3)
        states = {m.node_id: m.state for m in (await a.view()).members}
        assert states == {"node-a": "alive", "node-b": "alive", "node-c": "dead"}
    view = await read_view(opened())
    assert {m.node_id: m.state for m in view.members} == {
        "node-a": "left",
        "node-b": "left",
        "node-c": "dead",
    }


async def test_a_second_node_with_a_live_id_is_refused(
    opened: Callable[..., NatsMembershipBackend],
) -> None:
    """A second Membership with a live node's id cannot join (ConfigurationError after its
    retries, LeaseHeld underneath); the first stays the member."""
    async with node(opened(), "twin") as first:
        second = node(opened(), "twin")
        with pytest.raises(LeaseHeld):
            await second.heartbeat()
        second.ttl = 0.3  # join retries for 1.5 ttl: keep the test short
        with pytest.raises(ConfigurationError, match="twin"):
            await second.join()
        [m] = (await first.view()).live
        assert m.incarnation == first.incarnation


async def test_heartbeats_resume_after_a_nats_restart() -> None:
    """While NATS is down a heartbeat fails with TransportUnavailable; after the restart the
    supervised heartbeat resumes by itself and the member is alive again."""
    with NatsService() as server:
        async with NatsMembershipBackend(server.url(), "restart") as backend:
            health = Supervisor()
            m = Membership(backend, node_id="node-r", ttl=1.0, health=health)
            await m.join()
            health.supervise("cluster membership", m.run, backoff=0.1)
            server._stop()  # down, data kept
            await asyncio.sleep(0.2)
            with pytest.raises(TransportUnavailable):
                await backend.heartbeat(m.info())
            await asyncio.sleep(1.2)  # past the ttl: dead by the server clock once back
            server.restart()
            async with asyncio.timeout(15):
                while True:
                    await asyncio.sleep(0.2)
                    try:
                        [r] = (await read_view(backend)).members
                    except TransportUnavailable:
                        continue
                    if r.alive and r.last_seen > m.started_at + 1.0:
                        break
            await health.stop_task("cluster membership")
            await m.leave()


async def test_serve_uses_the_nats_transport_as_the_members_server(nats_url: str) -> None:
    """With cluster.backend nats and no nats_url, chronik serve's backend is a KV bucket on
    the transport's server (its options dropped)."""
    from chronik.server.cluster import membership_backend

    config = ClusterConfig(enabled=True, backend="nats", nats_bucket="serve_b")
    backend = membership_backend(config, None, f"{nats_url}?stream_prefix=X")
    assert isinstance(backend, NatsMembershipBackend) and backend.url == nats_url
    async with backend:
        assert await backend.heartbeat(node(backend, "node-s").info()) > 0


async def test_an_unreachable_server_is_transport_unavailable() -> None:
    """Reading from a NATS server nobody runs fails with TransportUnavailable."""
    from chronik.testing.service_base import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    async with NatsMembershipBackend(url, timeout=0.5) as backend:
        with pytest.raises(TransportUnavailable):
            await read_view(backend)


def test_cluster_status_reads_a_nats_bucket(nats_url: str, tmp_path: Path) -> None:
    """chronik cluster status --nats (and --config with cluster.backend nats) lists the
    members of the bucket."""
    from chronik.cli import _build

    cli = _build()

    async def register() -> None:
        async with NatsMembershipBackend(nats_url, "cli_b") as backend:
            await node(backend, "node-cli").join()

    asyncio.run(register())
    runner = CliRunner()
    shown = runner.invoke(cli, ["cluster", "status", "--nats", nats_url, "--bucket", "cli_b"])
    assert shown.exit_code == 0, shown.output
    assert "node-cli" in shown.output
    config = tmp_path / "chronik.yaml"
    config.write_text(
        f"transport: {nats_url}\ncluster: {{enabled: true, backend: nats, nats_bucket: cli_b}}\n"
    )
    as_json = runner.invoke(cli, ["cluster", "status", "--config", str(config), "--json"])
    assert as_json.exit_code == 0, as_json.output
    [member] = json.loads(as_json.output)["members"]
    assert member["node_id"] == "node-cli"


class _MarkerFirst:
    """A KV watcher whose first update is the caught-up marker (None), as nats-py's watcher
    sometimes gives it before entries its consumer was already sent."""

    def __init__(self, watcher: Any) -> None:
        self.watcher, self.first = watcher, True

    def __aiter__(self) -> _MarkerFirst:
        return self

    async def __anext__(self) -> Any:
        if self.first:
            self.first = False
            return None
        return await self.watcher.__anext__()

    async def stop(self) -> None:
        await self.watcher.stop()


async def test_an_early_caught_up_marker_does_not_hide_the_members(
    opened: Callable[..., NatsMembershipBackend],
) -> None:
    """A read whose watcher says "caught up" before any entry, while the bucket holds values,
    reads again instead of answering that nobody is there."""
    await node(opened(), "node-a").join()
    backend = opened()
    assert [m.node_id for m in (await backend.read(60.0))[0]] == ["node-a"]
    kv = backend.kv._kv
    assert kv is not None
    real_watch, watches = kv.watch, []

    async def watch(*args: Any, **kwargs: Any) -> Any:
        watches.append(args)
        watcher = await real_watch(*args, **kwargs)
        return _MarkerFirst(watcher) if len(watches) == 1 else watcher

    kv.watch = watch  # type: ignore[method-assign]
    assert [m.node_id for m in (await backend.read(60.0))[0]] == ["node-a"]
    assert len(watches) == 2  # the empty first read was not believed
