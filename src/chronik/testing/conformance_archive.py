"""Conformance cases for the archive wired into the store (``chronik.store.archive_ops``,
``chronik.store.archived_reads``): dropping the hot log's prefix keeps every stream's state, and
reads through archive + hot data see one order with no gap and no duplicate, also when a drop
runs while a reader is between the two. Part of the suites run on adapters that declare
``supports_deletion``; the others raise NotSupported."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from chronik import STREAM_EXISTS, AppendCondition, EventData, Position, Query, StreamId
from chronik.archive import Archive, MemoryBlobs
from chronik.errors import AppendConditionFailed, NotSupported, ValidationError
from chronik.messages import RecordedEvent
from chronik.store.base import EventStore
from chronik.testing.conformance_state import collect, ev

__all__ = ["StoreArchiveConformance"]

_A, _B = StreamId("arc", "a"), StreamId("arc", "b")


async def _fill(store: EventStore, rounds: int = 6) -> list[RecordedEvent]:
    """Two interleaved streams plus tagged events; every stored event in order."""
    for n in range(rounds):
        await store.append(_A, [ev(n), ev(n + 100, "thing.other")])
        await store.append(_B, [ev(n)])
    await store.append_tagged([EventData("seat.claimed", {"n": 1}, tags=("seat:1",))])
    await store.append(_A, [ev(99)])
    return await collect(store.read_all())


async def _seal_and_drop(store: EventStore, archive: Archive, upto: Position) -> int:
    """What the archiver does: seal the hot events up to ``upto``, then drop them."""
    floor = await store.archive_floor()
    attached, store.archive = store.archive, None  # read the hot log alone
    try:
        batch = [e async for e in store.read_all(after=floor) if e.position <= upto]
    finally:
        store.archive = attached
    if batch:
        await archive.seal(batch)
    detached = store.archive
    store.attach_archive(None)  # a dropper in another process: the reader's archive is stale
    try:
        return await store.drop_archived(upto)
    finally:
        store.attach_archive(detached)


async def _archived(store: EventStore, upto: int) -> tuple[list[RecordedEvent], Archive]:
    """A filled store whose first ``upto`` events went to an attached archive."""
    events = await _fill(store)
    archive = Archive(MemoryBlobs())
    await archive.open()
    assert await _seal_and_drop(store, archive, events[upto - 1].position) == upto
    store.attach_archive(archive)
    return events, archive


class StoreArchiveConformance:
    """Dropping archived events, and reading through archive and hot log as one."""

    async def test_archiving_is_refused_without_the_capability(self, store: EventStore) -> None:
        """A store without supports_deletion raises NotSupported for drop_archived."""
        if store.supports_deletion:
            pytest.skip("the store supports deletion")
        with pytest.raises(NotSupported):
            await store.drop_archived(Position(1))

    async def test_drop_keeps_stream_state_and_records_the_floor(self, store: EventStore) -> None:
        """drop_archived deletes the prefix, keeps versions and expectations, records the
        floor durably, is a no-op on retry and never takes the log's last event."""
        if not store.supports_deletion:
            pytest.skip("no deletion")
        events = await _fill(store)
        versions = [await store.stream_version(s) for s in (_A, _B)]
        upto = events[9].position
        archive = Archive(MemoryBlobs())
        await archive.open()
        assert await store.archive_floor() is None
        assert await _seal_and_drop(store, archive, upto) == 10
        assert await store.archive_floor() == upto
        assert [await store.stream_version(s) for s in (_A, _B)] == versions
        assert [e.event_id async for e in store.read_all()] == [e.event_id for e in events[10:]]
        assert await store.drop_archived(upto) == 0  # a retry
        with pytest.raises(ValidationError):
            await store.drop_archived((await collect(store.read_all()))[-1].position)
        assert versions[1] is not None
        await store.append(_B, [ev(7)], expected=versions[1])
        assert await store.stream_version(_B) == versions[1] + 1
        await store.append(_A, [ev(8)], expected=STREAM_EXISTS)

    async def test_reads_go_through_archive_and_hot_log_as_one(self, store: EventStore) -> None:
        """read_all, read_stream, read_query, get_event and subscribe see archived events
        then hot ones in one order, in both directions, with filters and bounds."""
        if not store.supports_deletion:
            pytest.skip("no deletion")
        events, _ = await _archived(store, 9)
        ids = [e.event_id for e in events]
        assert [e.event_id async for e in store.read_all()] == ids
        assert [e.event_id async for e in store.read_all(backward=True)] == ids[::-1]
        assert [e.event_id async for e in store.read_all(after=events[3].position)] == ids[4:]
        got = store.read_all(backward=True, before=events[11].position, limit=5)
        assert [e.event_id async for e in got] == ids[6:11][::-1]
        other = [e.event_id for e in events if e.type == "thing.other"]
        assert [e.event_id async for e in store.read_all(types=["thing.other"])] == other
        a = [e for e in events if e.stream == _A]
        assert [e.event_id async for e in store.read_stream(_A)] == [e.event_id for e in a]
        back = store.read_stream(_A, backward=True)
        assert [e.sequence async for e in back] == [e.sequence for e in a][::-1]
        assert [e.sequence async for e in store.read_stream(_A, 2, limit=3)] == [2, 3, 4]
        assert [e.sequence async for e in store.read_stream(_A, 5, True, 3)] == [5, 4, 3]
        rows = await store.read_stream_payloads(_A)
        assert [r[0] for r in rows] == [e.sequence for e in a]
        assert await store.get_event(ids[0]) == events[0]
        assert await store.get_event(ids[-1]) == events[-1]
        seat = [e.event_id async for e in store.read_query(Query.of(tags=["seat:1"]))]
        assert seat == [e.event_id for e in events if e.tags]
        seen: list[str] = []
        async with store.subscribe(batch_size=4) as sub:
            async for e in sub:
                seen.append(e.event_id)
                if len(seen) == len(ids):
                    break
        assert seen == ids

    async def test_a_drop_while_a_reader_is_between_archive_and_hot_log_skips_nothing(
        self, store: EventStore
    ) -> None:
        """A reader whose archive view is older than a drop that ran after its last read
        (a subscription, read_all, read_stream both ways) still gets every event once."""
        if not store.supports_deletion:
            pytest.skip("no deletion")
        events, archive = await _archived(store, 4)
        ids = [e.event_id for e in events]
        writer = Archive(archive.blobs)  # the archiver's view of the same blobs
        await writer.open()
        seen: list[str] = []
        async with store.subscribe(batch_size=3) as sub:
            async for e in sub:
                seen.append(e.event_id)
                if len(seen) == 6:  # between: archive done, reading the hot log
                    await _seal_and_drop(store, writer, events[14].position)
                if len(seen) == len(ids):
                    break
        assert seen == ids
        assert archive.horizon == events[14].position  # the reader refreshed its view
        checks: list[tuple[Callable[[], Awaitable[list[RecordedEvent]]], list[RecordedEvent]]] = [
            (lambda: collect(store.read_stream(_A)), [e for e in events if e.stream == _A]),
            (
                lambda: collect(store.read_stream(_A, backward=True)),
                [e for e in events[::-1] if e.stream == _A],
            ),
            (lambda: collect(store.read_all(after=events[13].position)), events[14:]),
        ]
        for upto, (read, expected) in zip((15, 16, 17), checks, strict=True):
            stale = Archive(archive.blobs)  # a reader's view from before the next drop
            await stale.open()
            store.attach_archive(stale)
            await _seal_and_drop(store, writer, events[upto].position)
            assert [e.event_id for e in await read()] == [e.event_id for e in expected]
            assert stale.horizon == events[upto].position

    async def test_append_conditions_see_archived_events(self, store: EventStore) -> None:
        """A DCB condition whose matching event was archived still fails the append."""
        if not store.supports_deletion:
            pytest.skip("no deletion")
        await _archived(store, 19)
        claim = EventData("seat.claimed", {"n": 2}, tags=("seat:1",))
        with pytest.raises(AppendConditionFailed):
            await store.append_tagged([claim], AppendCondition(Query.of(tags=["seat:1"])))
        other = EventData("seat.claimed", {"n": 3}, tags=("seat:2",))
        await store.append_tagged([other], AppendCondition(Query.of(tags=["seat:2"])))
