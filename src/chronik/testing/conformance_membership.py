"""The membership conformance suite: what a ``chronik.cluster.MembershipBackend`` means.

Mix ``MembershipConformance`` into a test class with a ``backends`` fixture: a callable that
returns a new backend on the same place each time (the same store, the same NATS bucket), as
two processes of one cluster would have::

    class TestMyBackend(MembershipConformance):
        @pytest.fixture
        def backends(self) -> Callable[[], MembershipBackend]: ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from chronik.cluster.backend import MembershipBackend
from chronik.cluster.member import MemberInfo
from chronik.errors import LeaseHeld

__all__ = ["MembershipConformance", "TTL"]

TTL = 0.8  # seconds: a lease that ends within the test
_PAST = TTL + 0.3  # seconds to sleep until a TTL lease has surely ended

Backends = Callable[[], MembershipBackend]


def info(node_id: str, incarnation: int = 1, **kw: Any) -> MemberInfo:
    """A node's record with a short ttl."""
    return MemberInfo(
        node_id=node_id, incarnation=incarnation, started_at=time.time(), ttl=TTL, **kw
    )


class MembershipConformance:
    """Heartbeat, leave, read by one clock, expiry, one live holder per id, pruning."""

    async def test_an_empty_backend_has_no_members(self, backends: Backends) -> None:
        """Reading where no node ever registered lists nobody, with a clock near ours."""
        found, now = await backends().read(300.0)
        assert found == [] and abs(now / 1e6 - time.time()) < 5

    async def test_a_heartbeat_registers_the_record_alive(self, backends: Backends) -> None:
        """After a heartbeat the node is read back alive with its record, lease epoch 1 and
        last seen at the backend clock the heartbeat answered."""
        one = backends()
        record = info("node-a", grpc="10.0.0.5:50051", parts=("projection:x",), load={"n": 2})
        at = await one.heartbeat(record)
        assert abs(at / 1e6 - time.time()) < 5
        [a], now = await backends().read(300.0)
        assert (a.node_id, a.grpc, a.parts, a.load, a.incarnation) == (
            "node-a",
            "10.0.0.5:50051",
            ("projection:x",),
            {"n": 2.0},
            1,
        )
        assert a.alive and a.state == "alive" and a.lease_epoch == 1
        assert abs(a.last_seen - at / 1e6) < 0.5 and now >= at - 50_000

    async def test_a_leave_shows_the_node_left_at_once(self, backends: Backends) -> None:
        """leave() ends the lease: the node is read as left, not alive, at once."""
        one = backends()
        at = await one.heartbeat(info("node-a"))
        await one.leave(info("node-a"), at + 1000)
        [a], _ = await backends().read(300.0)
        assert a.state == "left" and not a.alive

    async def test_a_silent_node_is_dead_after_its_ttl(self, backends: Backends) -> None:
        """A node that stops renewing is alive until its ttl passes by the backend clock, then
        dead; one that renews stays alive."""
        one, two = backends(), backends()
        await one.heartbeat(info("node-k"))
        await two.heartbeat(info("node-b"))
        assert [m.alive for m in (await backends().read(300.0))[0]] == [True, True]
        for _ in range(3):
            await asyncio.sleep(_PAST / 3)
            await two.heartbeat(info("node-b"))
        found, _ = await backends().read(300.0)
        assert {m.node_id: m.state for m in found} == {"node-b": "alive", "node-k": "dead"}

    async def test_a_live_node_id_is_held_then_taken_over(self, backends: Backends) -> None:
        """Another incarnation with a live node's id gets LeaseHeld and changes nothing; once
        the lease expired it takes the id over with a greater lease epoch."""
        one, two = backends(), backends()
        await one.heartbeat(info("twin", 1))
        with pytest.raises(LeaseHeld):
            await two.heartbeat(info("twin", 2))
        [a], _ = await backends().read(300.0)
        assert (a.incarnation, a.alive) == (1, True)
        await asyncio.sleep(_PAST)
        await two.heartbeat(info("twin", 2))
        [b], _ = await backends().read(300.0)
        assert (b.incarnation, b.alive) == (2, True) and b.lease_epoch > a.lease_epoch
        with pytest.raises(LeaseHeld):  # the old incarnation is refused from then on
            await one.heartbeat(info("twin", 1))

    async def test_a_stale_leave_leaves_the_new_holder_alone(self, backends: Backends) -> None:
        """An old incarnation that leaves after another took its id over changes nothing:
        the new holder stays alive with its record."""
        one, two = backends(), backends()
        await one.heartbeat(info("twin", 1))
        await asyncio.sleep(_PAST)
        at = await two.heartbeat(info("twin", 2, grpc="10.0.0.9:50051"))
        await one.leave(info("twin", 1), at + 1000)
        [m], _ = await backends().read(300.0)
        assert (m.incarnation, m.grpc, m.state) == (2, "10.0.0.9:50051", "alive")

    async def test_racing_incarnations_cannot_both_hold_an_id(self, backends: Backends) -> None:
        """Two incarnations registering one free id at once: exactly one wins, the other gets
        LeaseHeld."""
        racers = [backends() for _ in range(4)]
        await asyncio.gather(*(b.now_us() for b in racers))  # connected, table/bucket made
        results = await asyncio.gather(
            *(b.heartbeat(info("contested", i + 1)) for i, b in enumerate(racers)),
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, int)]
        assert len(won) == 1 and all(isinstance(r, LeaseHeld) for r in results if r not in won)
        [m], _ = await backends().read(300.0)
        assert m.alive and results[m.incarnation - 1] == won[0]

    async def test_gone_members_are_forgotten_and_pruned(self, backends: Backends) -> None:
        """A dead member is listed for forget_after seconds and no more; prune deletes it and
        leaves a live one alone."""
        one = backends()
        await one.heartbeat(info("node-k"))
        await asyncio.sleep(_PAST)
        now = await one.heartbeat(info("node-b"))
        listed = (await one.read(60.0, now))[0]
        assert [m.state for m in listed] == ["alive", "dead"], (now, listed)
        assert [m.node_id for m in (await one.read(0.05, now))[0]] == ["node-b"]
        assert await one.prune(0.05, now) == 1
        assert [m.node_id for m in (await backends().read(60.0))[0]] == ["node-b"]

    async def test_the_clock_is_one_for_every_reader(self, backends: Backends) -> None:
        """now_us() is the backend's clock: two clients read one clock (ours before any write),
        and a heartbeat answers a time between two reads of it."""
        one, two = backends(), backends()
        before = await one.now_us()
        at = await two.heartbeat(info("node-a"))
        after = await one.now_us()
        assert before - 1000 <= at <= after + 1000 and after - before < 5_000_000
