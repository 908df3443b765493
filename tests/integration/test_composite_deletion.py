"""Streams over time through compositions: rw:// passes deletes, retention, compaction,
stream starts and rewrites to its write store (the deletion, retention and stream-start
conformance suites run through it), group:// refuses each of them with NotSupported naming
the operation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.errors import NotSupported, StreamDeleted
from chronik.lifecycle.scavenger import scavenge
from chronik.messages import NO_STREAM, EventData, Position, StreamId
from chronik.store.base import EventStore
from chronik.store.group import GroupStore
from chronik.store.retention import Retention
from chronik.store.rw import ReadWriteStore
from chronik.testing.conformance import StoreFactory
from chronik.testing.conformance_archive import StoreArchiveConformance
from chronik.testing.conformance_deletion import DeletionConformance
from chronik.testing.conformance_retention import RetentionConformance
from chronik.testing.conformance_stream_start import StreamStartConformance


class TestReadWriteOverSqlite(
    DeletionConformance, RetentionConformance, StreamStartConformance, StoreArchiveConformance
):
    """rw over one SQLite file (a writer, a reader of the same file) meets the deletion,
    retention, stream-start and archive semantics of its writer."""

    @pytest.fixture
    async def make_store(self, tmp_path: Path) -> AsyncIterator[StoreFactory]:
        stores: list[EventStore] = []

        async def make(**options: Any) -> EventStore:
            url = f"sqlite:///{tmp_path}/rw{len(stores)}.db"
            writer = chronik.open_store(url, **options)
            store = ReadWriteStore(writer, [chronik.open_store(url)])
            stores.append(await store.open())
            return store

        yield make
        for store in stores:
            await store.close()

    @pytest.fixture
    async def store(self, make_store: StoreFactory) -> EventStore:
        return await make_store()


async def test_rw_mirrors_its_writer(tmp_path: Path) -> None:
    """rw declares deletion exactly when its writer does: over memory it deletes there (the
    tombstone read back through rw), over lmdb (no deletion) it refuses like lmdb."""
    writer = chronik.open_store("memory://")
    async with ReadWriteStore(writer, [writer]) as rw:
        assert rw.supports_deletion is True
        stream = StreamId("cart", "c1")
        await rw.append(stream, [EventData("cart.opened", {})], NO_STREAM)
        await rw.delete_stream(stream, 0, hard=True)
        with pytest.raises(StreamDeleted):
            await rw.stream_version(stream)
        assert (await rw.get_retention(stream)).truncate_before == 2
    pytest.importorskip("lmdb")
    lmdb = chronik.open_store(f"lmdb:///{tmp_path}/l")
    async with ReadWriteStore(lmdb, [lmdb]) as rw:
        assert rw.supports_deletion is False
        with pytest.raises(NotSupported, match="stream deletion"):
            await rw.delete_stream(StreamId("cart", "c1"))
        with pytest.raises(NotSupported, match="stream deletion"):
            await rw.set_retention(StreamId("cart", "c1"), Retention(max_count=1))


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("stream deletion", lambda g, s: g.delete_stream(s)),
        ("stream retention", lambda g, s: g.set_retention(s, Retention(max_count=1))),
        ("stream retention", lambda g, s: g.get_retention(s)),
        ("scavenging", lambda g, s: g.scavenge_stream(s, 1, 10)),
        ("stream compaction", lambda g, s: g.compact_stream(s, 0, EventData("x.y", {}))),
        ("rewriting an event in place", lambda g, s: g.rewrite_event("e1", b"{}", "json")),
        ("dropping a snapshot", lambda g, s: g.drop_snapshot(s)),
        ("stream retention", lambda g, s: scavenge(g)),
        ("archiving", lambda g, s: g.drop_archived(Position(1))),
        ("archiving", lambda g, s: g.archive_floor()),
    ],
)
async def test_group_refuses_naming_the_operation(operation: str, call: Any) -> None:
    """Each stream-over-time operation on a group view is NotSupported naming it; the members
    are unchanged."""
    orders, billing = chronik.open_store("memory://"), chronik.open_store("memory://")
    stream = StreamId("orders", "o1")
    async with GroupStore({"orders": orders, "billing": billing}) as group:
        await orders.append(stream, [EventData("order.placed", {})], NO_STREAM)
        with pytest.raises(NotSupported, match=operation) as err:
            await call(group, stream)
        assert err.value.operation.startswith(operation)
        assert await orders.stream_version(stream) == 0
