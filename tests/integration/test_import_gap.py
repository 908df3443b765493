"""Imports and moves of streams whose first events were scavenged in the source: the target
starts them at the same sequence (``store.start_stream_at``), keeps every id, sequence, order,
metadata and tag, answers appends like the source, and a re-run changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import chronik
from chronik.errors import (
    ImportConflict,
    StoreUnavailable,
    StreamDeleted,
    WrongExpectedVersion,
)
from chronik.lifecycle import move_store
from chronik.lifecycle.export import export_lines
from chronik.lifecycle.importer import import_events
from chronik.lifecycle.scavenger import scavenge
from chronik.messages import NO_STREAM, EventData, Position, StreamId
from chronik.store import EventStore
from chronik.store.memory import MemoryEventStore
from chronik.store.retention import Retention

GAP = StreamId("ledger", "gap", "acme")  # 0..3 scavenged, 4..6 stay
SOFT = StreamId("ledger", "soft")  # 0..1 and its deletion event 2 scavenged but the mark
HARD = StreamId("ledger", "hard")  # 0..1 scavenged, then tombstoned
WHOLE = StreamId("ledger", "whole")  # never scavenged
STREAMS = (GAP, SOFT, HARD, WHOLE)


def ev(i: int) -> EventData:
    """An event with metadata and tags."""
    return EventData(
        "ledger.posted", {"i": i}, {"correlation_id": f"c{i}", "k": "v"}, tags=[f"n:{i % 3}"]
    )


async def fill(store: EventStore) -> None:
    """Streams whose starts the scavenger removed, interleaved with one it left whole."""
    await store.append(GAP, [ev(i) for i in range(4)], NO_STREAM)
    await store.append(WHOLE, [ev(0)], NO_STREAM)
    await store.append(SOFT, [ev(0), ev(1)], NO_STREAM)
    await store.delete_stream(SOFT, 1)
    await store.append(HARD, [ev(0), ev(1)], NO_STREAM)
    await store.append(GAP, [ev(i) for i in range(4, 7)], 3)
    await store.append(SOFT, [ev(3)], NO_STREAM)
    await store.append(HARD, [ev(2)], 1)
    await store.set_retention(GAP, Retention(max_count=3))
    await store.set_retention(HARD, Retention(truncate_before=2))
    await store.set_retention(SOFT, Retention(truncate_before=3))
    await store.append(WHOLE, [ev(1)], 0)
    await scavenge(store)
    await store.delete_stream(HARD, 2, hard=True)


Seen = tuple[object, list[tuple[str, int, str, bytes, dict[str, str], tuple[str, ...]]], object]


async def observe(store: EventStore) -> dict[str, Seen]:
    """Versions, events (id, sequence, type, payload, metadata, tags) and truncation points."""
    seen: dict[str, Seen] = {}
    for stream in STREAMS:
        try:
            version: object = await store.stream_version(stream)
            events = [
                (e.event_id, e.sequence, e.type, e.payload, e.metadata.to_dict(), tuple(e.tags))
                async for e in store.read_stream(stream)
            ]
        except StreamDeleted:
            version, events = "tombstone", []
        seen[str(stream)] = (version, events, (await store.get_retention(stream)).truncate_before)
    return seen


async def log(store: EventStore) -> list[tuple[str, str, int]]:
    """The global order as (event id, stream, sequence)."""
    return [(e.event_id, str(e.stream), e.sequence) async for e in store.read_all()]


async def behave(store: EventStore) -> list[object]:
    """Appends after the import: answered the same way by the source and every target."""
    out: list[object] = []
    try:
        await store.append(GAP, [ev(9)], 3)
    except WrongExpectedVersion as exc:
        out.append(exc.actual)
    out.append((await store.append(GAP, [ev(7)], 6)).last_sequence)
    out.append((await store.append(SOFT, [ev(8)], 3)).last_sequence)
    try:
        await store.append(HARD, [ev(9)])
    except StreamDeleted as exc:
        out.append(type(exc).__name__)
    return out


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """An empty target store of each kind with deletion."""
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/target.db"
    else:
        url = request.getfixturevalue("postgres_url")
    async with chronik.open_store(url) as store:
        yield store


async def _lines(store: EventStore, after: Position | None = None) -> list[bytes]:
    return [line async for line in export_lines(store, after=after)]


async def test_a_scavenged_start_imports_faithfully(target: EventStore) -> None:
    """The streams start where the source's first stored events are; ids, sequences, order,
    metadata, tags and truncation points are the source's; a re-run appends nothing; appends
    after it are answered as the source answers them."""
    async with MemoryEventStore() as src:
        await fill(src)
        want, order = await observe(src), await log(src)
        assert want[str(GAP)][1][0][1] == 4 and want[str(SOFT)][1][0][1] == 3
        assert [q for _, s, q in order if s == str(HARD)] == [2, 3]  # 2 and its deletion
        lines = await _lines(src)
        report = await import_events(target, lines)
        assert (report.appended, report.skipped) == (len(order), 0)
        assert await observe(target) == want
        assert await log(target) == order
        again = await import_events(target, lines)
        assert (again.appended, again.skipped) == (0, len(order))
        assert await observe(target) == want and await log(target) == order
        assert await behave(target) == await behave(src) == [6, 7, 4, "StreamDeleted"]


async def test_an_interrupted_start_resumes(target: EventStore) -> None:
    """A crash after the streams were started and before their batch committed leaves them
    started and empty (reading as the source's fully scavenged streams); the re-run imports
    them from there."""
    async with MemoryEventStore() as src:
        await fill(src)
        lines, want, order = await _lines(src), await observe(src), await log(src)

    def crash(step: str, unit: object) -> None:
        if step == "commit":
            raise RuntimeError("crash before the batch commits")

    target.fault_hook = crash
    with pytest.raises(StoreUnavailable, match="crash before"):
        await import_events(target, lines)
    target.fault_hook = None
    assert await log(target) == []
    assert await target.stream_version(GAP) is None
    assert (await target.get_retention(GAP)).truncate_before == 4
    with pytest.raises(WrongExpectedVersion):
        await target.append(GAP, [ev(9)], 3)
    report = await import_events(target, lines)
    assert (report.appended, report.skipped) == (len(order), 0)
    assert await observe(target) == want and await log(target) == order


async def test_an_incremental_export_with_a_gap_is_still_refused(target: EventStore) -> None:
    """An export after a position cannot tell a scavenged start from events in an earlier
    file: a stream the target lacks the start of is an ImportConflict, nothing started."""
    stream = StreamId("ledger", "later")
    async with MemoryEventStore() as src:
        await src.append(stream, [ev(0), ev(1)], NO_STREAM)
        head = await src.head()
        await src.append(stream, [ev(2)], 1)
        lines = await _lines(src, after=head)
    with pytest.raises(ImportConflict, match="earlier export") as err:
        await import_events(target, lines)
    assert err.value.stream == str(stream) and err.value.line == 2
    assert await target.get_retention(stream) == Retention()


async def test_a_store_without_deletion_keeps_refusing(tmp_path: Path) -> None:
    """lmdb:// cannot start a stream past 0: the import is the ImportConflict that says why."""
    async with MemoryEventStore() as src:
        await src.append(GAP, [ev(i) for i in range(4)], NO_STREAM)
        await src.append(WHOLE, [ev(0)], NO_STREAM)
        await src.scavenge_stream(GAP, 2, 100)
        lines = await _lines(src)
    async with chronik.open_store(f"lmdb:///{tmp_path}/l") as store:
        assert not store.supports_deletion
        with pytest.raises(ImportConflict, match="scavenged") as err:
            await import_events(store, lines)
        assert err.value.stream == str(GAP) and err.value.line == 2


async def test_move_sqlite_postgres_sqlite_keeps_a_scavenged_stream(
    tmp_path: Path, postgres_url: str
) -> None:
    """SQLite -> PostgreSQL -> SQLite of a store with scavenged starts: each move verifies,
    every event id, sequence and the order are the source's, a re-run appends nothing."""
    async with (
        chronik.open_store(f"sqlite:///{tmp_path}/a.db") as first,
        chronik.open_store(postgres_url) as pg,
        chronik.open_store(f"sqlite:///{tmp_path}/b.db") as last,
    ):
        await fill(first)
        want, order = await observe(first), await log(first)
        assert want[str(GAP)][1][0][1] == 4
        for source, dest in ((first, pg), (pg, last)):
            report = await move_store(source, dest)
            assert report.verified is True, report.problem
            assert report.imported.appended == len(order)
            assert await observe(dest) == want and await log(dest) == order
            again = await move_store(source, dest)
            assert again.verified is True and again.imported.appended == 0
        assert await behave(last) == await behave(first) == [6, 7, 4, "StreamDeleted"]
