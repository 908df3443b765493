"""Deletes as projections, commands and the wire see them: the deletion event drops a stream's
read-model rows, a tombstoned aggregate refuses commands with StreamDeleted (404)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

import chronik
from chronik.aggregate import AggregateModel
from chronik.projections import Projection, ProjectionProcessor, ReadModel, Table
from chronik.server.status import error_class, wire_status
from chronik.store.base import EventStore


class Bumped(msgspec.Struct):
    """The counter's event."""

    n: int


class Bump(msgspec.Struct):
    """The counter's command."""


LINES = Table("lines", {"order_id": str, "line": int, "qty": int}, primary_key=("order_id", "line"))


def lines_projection() -> Projection:
    """Order lines per order; a deleted order's lines are dropped."""
    p = Projection("lines", tables=[LINES])

    @p.on("line.added")
    def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        rm.upsert("lines", order_id=e.stream.aggregate_id, line=e.sequence, qty=e.json()["qty"])

    @p.on(chronik.STREAM_DELETED)
    async def deleted(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        info = chronik.deletion_of(e)
        assert info is not None and info.before == e.sequence
        await rm.delete_where("lines", order_id=e.stream.aggregate_id)

    return p


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/d.db"
    async with chronik.open_store(url) as s:
        yield s


async def _settle(proc: ProjectionProcessor, store: EventStore) -> None:
    head = await store.head()
    assert head is not None
    async with asyncio.timeout(10):
        await proc.wait_for(head)


async def _lines(store: EventStore) -> list[tuple[str, int, int]]:
    rows = await store.read_table("lines__g1", order_by=("order_id", "line"))
    return [(r["order_id"], r["line"], r["qty"]) for r in rows]


async def test_a_projection_drops_a_deleted_streams_rows(store: EventStore) -> None:
    """Soft and hard deletes reach the projection after the stream's events: the stream's rows
    go, other streams' stay, and a restarted stream's new events come back."""
    o1, o2, o3 = (chronik.StreamId("order", i) for i in ("o1", "o2", "o3"))
    for s in (o1, o2, o3):
        await store.append(s, [chronik.EventData("line.added", {"qty": q}) for q in (1, 2)])
    async with ProjectionProcessor(store, lines_projection(), heartbeat=0.05) as proc:
        await _settle(proc, store)
        assert len(await _lines(store)) == 6
        await store.delete_stream(o1, expected=1)
        await store.delete_stream(o3, hard=True)
        await _settle(proc, store)
        assert await _lines(store) == [("o2", 0, 1), ("o2", 1, 2)]
        await store.append(o1, [chronik.EventData("line.added", {"qty": 7})], chronik.NO_STREAM)
        await _settle(proc, store)
        assert await _lines(store) == [("o1", 3, 7), ("o2", 0, 1), ("o2", 1, 2)]


async def test_delete_where_refuses_no_condition(store: EventStore) -> None:
    """delete_where without a column raises ValidationError naming the field."""
    rm = ReadModel(store, {"lines": LINES}, 1)
    with pytest.raises(chronik.ValidationError) as info:
        await rm.delete_where("lines")
    assert info.value.field == "where"


async def test_stream_deleted_travels_as_not_found() -> None:
    """StreamDeleted is a NotFound: 404 over HTTP, NOT_FOUND over gRPC, rebuilt by name."""
    err = chronik.StreamDeleted(chronik.StreamId("order", "o1"))
    assert isinstance(err, chronik.NotFound)
    status = wire_status(err)
    assert (status.http, status.grpc) == (404, "NOT_FOUND")
    assert error_class("StreamDeleted") is chronik.StreamDeleted
    assert "order" in str(err) and "tombstoned" in str(err)


class Counter(chronik.Aggregate):
    """A counter aggregate: each Bump adds one."""

    domain = "counter"
    n: int = 0

    @chronik.command()
    def bump(self, cmd: Bump) -> None:
        self.emit(Bumped(self.n + 1))

    @chronik.apply
    def _bumped(self, event: Bumped) -> None:
        self.n = event.n


async def test_commands_after_soft_and_hard_deletes(store: EventStore) -> None:
    """A soft-deleted aggregate starts again from nothing (sequences continue, snapshots of
    the old life ignored); a tombstoned one refuses commands with StreamDeleted."""
    registry = chronik.EventRegistry()
    registry.register(Bumped, "counter.bumped")
    app = chronik.Chronik(store=store, registry=registry)
    app.add_model(AggregateModel(Counter))
    s = chronik.StreamId("counter", "c1")

    def bump() -> chronik.Command:
        return chronik.Command(domain="counter", aggregate_id="c1", type="Bump")

    for _ in range(3):
        await app.dispatch(bump())
    await store.delete_stream(s, expected=2)
    result = await app.dispatch(bump())
    assert [e.sequence for e in result.events] == [4]
    assert [e.json()["n"] for e in await _events(store, s)] == [1]
    await app.dispatch(bump())
    assert [e.json()["n"] for e in await _events(store, s)] == [1, 2]
    await store.delete_stream(s, hard=True)
    with pytest.raises(chronik.StreamDeleted):
        await app.dispatch(bump())


async def _events(store: EventStore, s: chronik.StreamId) -> list[chronik.RecordedEvent]:
    return [e async for e in store.read_stream(s)]
