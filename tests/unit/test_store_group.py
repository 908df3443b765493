"""GroupStore: several stores' logs read as one (memory and SQLite members), read-only."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik import EventData, StreamId
from chronik.projections import Projection, ProjectionProcessor, ReadModel, Table, query
from chronik.store import GroupStore, open_store
from chronik.store.base import EventStore
from chronik.store.composite_urls import group_url

SEEN = Table("seen", {"event_id": str, "n": int, "member": str}, primary_key="event_id")


def counting() -> Projection:
    """Counts each event it applies per event id: a duplicate shows as n == 2."""
    p = Projection("seen", tables=[SEEN], batch_size=5)

    @p.on("placed", "billed")
    async def count(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("seen", event_id=e.event_id)
        rm.upsert("seen", event_id=e.event_id, n=(row["n"] if row else 0) + 1, member=e.type)

    return p


async def _fill(orders: EventStore, billing: EventStore, n: int, start: int = 0) -> list[str]:
    """Alternate appends to both members (1 ms apart: distinct record times); event ids."""
    ids = []
    for i in range(start, start + n):
        o = await orders.append(StreamId("orders", f"o{i % 3}"), [EventData("placed", {"i": i})])
        await asyncio.sleep(0.001)
        b = await billing.append(StreamId("billing", f"b{i % 2}"), [EventData("billed", {"i": i})])
        await asyncio.sleep(0.001)
        ids += [str(o.position), str(b.position)]
    return ids


async def _all(store: EventStore, **kw: Any) -> list[chronik.RecordedEvent]:
    return [e async for e in store.read_all(**kw)]


@pytest.fixture
async def members(tmp_path: Path) -> tuple[EventStore, EventStore]:
    """An orders store in memory and a billing store in SQLite (not opened yet)."""
    return open_store("memory://"), open_store(f"sqlite:///{tmp_path}/billing.db")


async def test_merged_reads_interleave_by_time_and_keep_each_members_order(
    members: tuple[EventStore, EventStore],
) -> None:
    """read_all merges both logs by record time; pages, filters and backward reads agree."""
    orders, billing = members
    async with GroupStore({"orders": orders, "billing": billing}) as group:
        await _fill(orders, billing, 12)
        merged = await _all(group)
        assert len(merged) == 24
        assert [e.type for e in merged] == ["placed", "billed"] * 12
        assert [e.json()["i"] for e in merged if e.type == "placed"] == list(range(12))
        assert [e.json()["i"] for e in merged if e.type == "billed"] == list(range(12))
        positions = [e.position for e in merged]
        assert all(a < b for a, b in itertools.pairwise(positions))
        assert await group.head() == positions[-1]
        paged, after = [], None
        while page := await _all(group, after=after, limit=5):
            paged += page
            after = page[-1].position
        assert [e.event_id for e in paged] == [e.event_id for e in merged]
        billed = [e.event_id for e in await _all(group, domains=["billing"])]
        assert billed == [e.event_id for e in merged if e.stream.domain == "billing"]
        newest = await _all(group, backward=True)
        assert [e.event_id for e in newest] == [e.event_id for e in reversed(merged)]
        pivot = merged[9]
        before = await _all(group, before=pivot.position, backward=True)
        later = await _all(group, after=pivot.position)
        assert [e.event_id for e in reversed(before)] == [e.event_id for e in merged[:9]]
        assert [e.event_id for e in later] == [e.event_id for e in merged[10:]]
        back, before_pos = [], None
        while page := await _all(group, before=before_pos, backward=True, limit=4):
            back += page
            before_pos = page[-1].position
        assert [e.event_id for e in back] == [e.event_id for e in newest]


async def test_stream_reads_and_listing_go_to_the_member_that_has_the_stream(
    members: tuple[EventStore, EventStore],
) -> None:
    """read_stream, stream_version, get_event and list_streams find each member's streams."""
    orders, billing = members
    async with GroupStore({"orders": orders, "billing": billing}) as group:
        await _fill(orders, billing, 4)
        o0 = [e.json()["i"] async for e in group.read_stream(StreamId("orders", "o0"))]
        assert o0 == [0, 3]
        assert await group.stream_version(StreamId("billing", "b1")) == 1
        assert await group.stream_version(StreamId("nobody", "x")) is None
        first = (await _all(billing))[0]
        found = await group.get_event(first.event_id)
        assert found is not None and found.json() == first.json()
        streams = {i.stream async for i in group.list_streams()}
        assert len(streams) == 5
        assert len([i async for i in group.list_streams(limit=4)]) == 4


async def test_a_subscription_catches_up_then_follows_both_members(
    members: tuple[EventStore, EventStore],
) -> None:
    """subscribe() on a group delivers stored events, then live appends to either member."""
    orders, billing = members
    async with GroupStore({"orders": orders, "billing": billing}) as group:
        await _fill(orders, billing, 3)
        got: list[str] = []

        async def follow() -> None:
            async for e in group.subscribe():
                got.append(f"{e.type}:{e.json()['i']}")
                if len(got) == 10:
                    return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.1)
        await _fill(orders, billing, 2, start=3)
        async with asyncio.timeout(10):
            await task
        assert got == [f"{t}:{i}" for i in range(5) for t in ("placed", "billed")]


async def test_a_projection_over_a_group_resumes_exactly_after_a_restart(tmp_path: Path) -> None:
    """Stopped mid-stream and started on fresh stores, a projection applies every event once."""
    urls = {"orders": f"sqlite:///{tmp_path}/o.db", "billing": f"sqlite:///{tmp_path}/b.db"}
    home = f"sqlite:///{tmp_path}/views.db"
    url = group_url(urls, home=home)
    async with open_store(urls["orders"]) as orders, open_store(urls["billing"]) as billing:
        await _fill(orders, billing, 20)
        group = open_store(url)
        assert isinstance(group, GroupStore)
        async with group:
            proc = ProjectionProcessor(group, counting(), heartbeat=0.02)
            await proc.start()
            writer = asyncio.create_task(_fill(orders, billing, 15, start=20))
            async with asyncio.timeout(10):
                while len(await query(group, "seen", "seen")) < 30:
                    await asyncio.sleep(0.002)
            await proc.stop()  # mid-stream: the writer is still appending
            await writer
        await _fill(orders, billing, 5, start=35)
        async with open_store(url) as again:
            async with ProjectionProcessor(again, counting(), heartbeat=0.02) as proc:
                head = await again.head()
                assert head is not None
                async with asyncio.timeout(10):
                    await proc.wait_for(head)
            rows = await query(again, "seen", "seen")
        every = {e.event_id for e in await _all(orders)} | {e.event_id for e in await _all(billing)}
        assert len(every) == 80
        assert {r["event_id"] for r in rows} == every
        assert {r["n"] for r in rows} == {1}


async def test_writes_are_refused_with_the_typed_error(
    members: tuple[EventStore, EventStore], tmp_path: Path
) -> None:
    """Appends, units and snapshots raise StoreReadOnly; without home= checkpoints too."""
    orders, billing = members
    home = open_store(f"sqlite:///{tmp_path}/home.db")
    async with GroupStore({"orders": orders, "billing": billing}, home=home) as group:
        s = StreamId("orders", "o1")
        with pytest.raises(chronik.StoreReadOnly, match="group view"):
            await group.append(s, [EventData("placed", {})])
        with pytest.raises(chronik.StoreReadOnly):
            async with group.transaction() as tx:
                tx.append(s, [EventData("placed", {})])
        with pytest.raises(chronik.StoreReadOnly):
            await group.save_snapshot(chronik.Snapshot(s, 0, "order", 1, b"{}"))
        assert await _all(orders) == []
        await group.save_checkpoint("reader", chronik.Position(0))  # home keeps it
        with pytest.raises(chronik.ValidationError) as bad:
            await group.save_checkpoint("reader", chronik.Position(123, 456))
        assert bad.value.field == "position"
        with pytest.raises(chronik.ValidationError) as unknown:
            await _all(group, after=chronik.Position(77, 5))
        assert unknown.value.field == "after"
    async with GroupStore({"orders": open_store("memory://")}) as bare:
        with pytest.raises(chronik.StoreReadOnly):
            await bare.save_checkpoint("reader", chronik.Position(0))
        with pytest.raises(chronik.StoreReadOnly):
            await bare.read_table("seen")


def test_bad_group_configurations_are_configuration_errors() -> None:
    """Empty members, bad member names and bad group URLs raise ConfigurationError."""
    with pytest.raises(chronik.ConfigurationError):
        GroupStore({})
    with pytest.raises(chronik.ConfigurationError, match="member name"):
        GroupStore({"Bad Name": open_store("memory://")})
    with pytest.raises(chronik.ConfigurationError):
        open_store("group://host/path?orders=memory%3A%2F%2F")
    with pytest.raises(chronik.ConfigurationError):
        open_store("group://?orders=memory%3A%2F%2F&orders=memory%3A%2F%2F")
