"""Conformance cases for soft and hard deletes and the idempotency matrix across them.

Part of ``EventStoreConformance``; each case runs only on adapters that declare
``supports_deletion`` (memory, SQLite, PostgreSQL) and is skipped on the others, which must
refuse deletes with NotSupported instead (``test_delete_is_refused_without_the_capability``).

The idempotency matrix (docs/concepts/consistency.md): an append of events E that committed,
retried with the same event ids and the same expectation, answers

============================  ===============  ===============  ===============  ===============
situation                     ANY              NO_STREAM        exact n          STREAM_EXISTS
============================  ===============  ===============  ===============  ===============
plain retry                   original result  original result  original result  original result
after more events appended    original result  original result  original result  original result
after a soft delete           original result  original result  original result  original result
after a hard delete           StreamDeleted    StreamDeleted    StreamDeleted    StreamDeleted
============================  ===============  ===============  ===============  ===============

and never stores anything twice; a retry whose ids match only partly, or with other content, is a
DuplicateEventError. Event ids are unique across the whole store, so a committed id is recognised
whatever happened to its stream since, until the scavenger removes the event physically.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import chronik
from chronik import ANY, NO_STREAM, STREAM_EXISTS, EventData, StreamId
from chronik.errors import (
    NotSupported,
    StreamDeleted,
    ValidationError,
    WrongExpectedVersion,
)
from chronik.store.base import EventStore
from chronik.store.deletion import STREAM_DELETED, StreamDeletion, deletion_of
from chronik.testing.conformance_state import collect, ev

__all__ = ["DeletionConformance"]

StoreFactory = Callable[..., Awaitable[EventStore]]
EXPECTATIONS = ("any", "no_stream", "exact", "stream_exists")
SITUATIONS = ("plain", "after_more_events", "after_soft_delete", "after_hard_delete")


def _needs_deletion(store: EventStore) -> None:
    if not store.supports_deletion:
        pytest.skip(f"{type(store).__name__} does not declare supports_deletion")


class DeletionConformance:
    """Soft / hard deletes, their events, units of work, and the idempotency matrix."""

    async def test_delete_is_refused_without_the_capability(self, store: EventStore) -> None:
        """A store without supports_deletion raises NotSupported and writes nothing."""
        if store.supports_deletion:
            pytest.skip("the store supports deletion")
        s = StreamId("order", "unsupported")
        await store.append(s, [ev(0)])
        with pytest.raises(NotSupported):
            await store.delete_stream(s)
        with pytest.raises(NotSupported):
            store.transaction().delete_stream(s)
        assert await store.stream_version(s) == 0

    async def test_soft_delete_reads_empty_and_restarts_after_the_deletion_event(
        self, store: EventStore
    ) -> None:
        """A soft-deleted stream reads empty, keeps its events in read_all, and a new append
        (NO_STREAM) starts it again with the sequence after the deletion event."""
        _needs_deletion(store)
        s = StreamId("order", "soft")
        await store.append(s, [ev(0), ev(1), ev(2)], NO_STREAM)
        deleted = await store.delete_stream(s, expected=2)
        assert (deleted.first_sequence, deleted.last_sequence) == (3, 3)
        assert await store.stream_version(s) is None
        assert await collect(store.read_stream(s)) == []
        assert await collect(store.read_stream(s, backward=True)) == []
        assert await collect(store.read_stream(s, from_sequence=1)) == []
        assert await store.read_stream_payloads(s) == []
        logged = await collect(store.read_all())
        assert [e.sequence for e in logged] == [0, 1, 2, 3]
        assert logged[-1].type == STREAM_DELETED
        assert deletion_of(logged[-1]) == StreamDeletion(s, False, 3, deleted.position)
        with pytest.raises(WrongExpectedVersion):
            await store.append(s, [ev(9)], STREAM_EXISTS)
        with pytest.raises(WrongExpectedVersion):
            await store.append(s, [ev(9)], 3)
        again = await store.append(s, [ev(4)], NO_STREAM)
        assert (again.first_sequence, again.last_sequence) == (4, 4)
        assert await store.stream_version(s) == 4
        events = await collect(store.read_stream(s))
        assert [(e.sequence, e.json()["n"]) for e in events] == [(4, 4)]
        assert [e.sequence for e in await collect(store.read_stream(s, backward=True))] == [4]
        assert [r[0] for r in await store.read_stream_payloads(s)] == [4]
        await store.append(s, [ev(5)], 4)
        assert [e.sequence for e in await collect(store.read_stream(s, from_sequence=0))] == [4, 5]

    async def test_a_delete_drops_the_streams_snapshot(self, store: EventStore) -> None:
        """A soft delete drops the stream's snapshot: a restarted stream starts from nothing."""
        _needs_deletion(store)
        s = StreamId("order", "snap")
        await store.append(s, [ev(0), ev(1)])
        await store.save_snapshot(chronik.Snapshot(s, 1, "order", 1, b"{}"))
        await store.delete_stream(s)
        assert await store.load_snapshot(s) is None
        await store.append(s, [ev(3)], NO_STREAM)
        assert await store.load_snapshot(s) is None

    async def test_delete_applies_the_expectation(self, store: EventStore) -> None:
        """A delete at the wrong version raises WrongExpectedVersion and changes nothing."""
        _needs_deletion(store)
        s = StreamId("order", "expect")
        with pytest.raises(WrongExpectedVersion):
            await store.delete_stream(s, expected=STREAM_EXISTS)
        await store.append(s, [ev(0), ev(1)])
        for wrong in (0, NO_STREAM, 5):
            with pytest.raises(WrongExpectedVersion) as info:
                await store.delete_stream(s, expected=wrong)
            assert info.value.actual == 1
        assert await store.stream_version(s) == 1
        assert len(await collect(store.read_all())) == 2
        await store.delete_stream(s, expected=STREAM_EXISTS)
        with pytest.raises(WrongExpectedVersion):  # it reads empty now
            await store.delete_stream(s, expected=STREAM_EXISTS)
        with pytest.raises(ValidationError):
            await store.delete_stream(s, hard="yes")  # type: ignore[arg-type]

    async def test_hard_delete_tombstones_the_stream_for_good(self, store: EventStore) -> None:
        """After a hard delete every append, delete and read of the stream raises
        StreamDeleted naming it; other streams are untouched."""
        _needs_deletion(store)
        s, other = StreamId("order", "hard"), StreamId("order", "other")
        await store.append(s, [ev(0), ev(1)])
        await store.append(other, [ev(0)])
        result = await store.delete_stream(s, hard=True)
        assert result.first_sequence == 2
        for expected in (ANY, NO_STREAM, STREAM_EXISTS, 1, 2):
            with pytest.raises(StreamDeleted) as info:
                await store.append(s, [ev(9)], expected)
            assert info.value.stream == s
        for hard in (False, True):
            with pytest.raises(StreamDeleted):
                await store.delete_stream(s, hard=hard)
        with pytest.raises(StreamDeleted):
            await collect(store.read_stream(s))
        with pytest.raises(StreamDeleted):
            await collect(store.read_stream(s, backward=True))
        with pytest.raises(StreamDeleted):
            await store.stream_version(s)
        with pytest.raises(StreamDeleted):
            async with store.transaction() as tx:
                tx.append(other, [ev(1)], 0)
                tx.append(s, [ev(10)])
        assert await store.stream_version(other) == 0  # the unit wrote nothing
        last = (await collect(store.read_all()))[-1]
        assert deletion_of(last) == StreamDeletion(s, True, 2, result.position)

    async def test_delete_in_a_unit_of_work_is_all_or_nothing(self, store: EventStore) -> None:
        """A delete commits with the unit's other appends, or not at all when one fails."""
        _needs_deletion(store)
        s, log = StreamId("order", "unit"), StreamId("audit", "unit")
        await store.append(s, [ev(0)])
        with pytest.raises(WrongExpectedVersion):
            async with store.transaction() as tx:
                tx.delete_stream(s, expected=0, hard=True)
                tx.append(log, [ev(1)], 7)
        assert await store.stream_version(s) == 0
        async with store.transaction() as tx:
            tx.delete_stream(s, expected=0, hard=True)
            tx.append(log, [EventData("order.deleted", {"id": "unit"})], NO_STREAM)
        deleted, logged = tx.results
        assert deleted.stream == s and deleted.first_sequence == 1
        assert logged.stream == log
        with pytest.raises(StreamDeleted):
            await store.stream_version(s)
        async with store.transaction() as tx:  # soft, then start again, in one unit
            tx.delete_stream(log, expected=0)
            tx.append(log, [ev(2)], NO_STREAM)
        assert [e.sequence for e in await collect(store.read_stream(log))] == [2]

    async def test_a_retried_delete_answers_its_original_result(self, store: EventStore) -> None:
        """A delete retried with its event id returns the original result; after the stream
        started again, the retry does not empty it a second time."""
        _needs_deletion(store)
        s = StreamId("order", "retry-delete")
        await store.append(s, [ev(0)])
        first = await store.delete_stream(s, expected=0, event_id="del-1")
        assert await store.delete_stream(s, expected=0, event_id="del-1") == first
        await store.append(s, [ev(2)], NO_STREAM)
        assert await store.delete_stream(s, expected=0, event_id="del-1") == first
        assert await store.stream_version(s) == 2
        assert [e.sequence for e in await collect(store.read_stream(s))] == [2]

    async def test_subscribers_see_the_deletion_event_in_log_order(self, store: EventStore) -> None:
        """A subscription filtered by domain delivers the deleted events, then the deletion
        event, then what came after, in log order."""
        _needs_deletion(store)
        s = StreamId("shop", "cart")
        await store.append(s, [ev(0)])
        await store.delete_stream(s)
        await store.append(StreamId("elsewhere", "x"), [ev(0)])
        await store.append(s, [ev(1)])
        seen: list[tuple[str, int]] = []
        async with store.subscribe(domains=["shop"]) as sub:
            async for event in sub:
                seen.append((event.type, event.sequence))
                if len(seen) == 3:
                    break
        assert seen == [("thing.happened", 0), (STREAM_DELETED, 1), ("thing.happened", 2)]

    @pytest.mark.parametrize("situation", SITUATIONS)
    @pytest.mark.parametrize("kind", EXPECTATIONS)
    async def test_idempotency_matrix(self, store: EventStore, kind: str, situation: str) -> None:
        """Each cell of the idempotency matrix: a committed append retried with the same ids
        and expectation gives the defined answer and stores nothing twice."""
        _needs_deletion(store)
        s = StreamId("matrix", f"{kind}-{situation}")
        expected: Any = {"any": ANY, "no_stream": NO_STREAM, "stream_exists": STREAM_EXISTS}.get(
            kind, 0
        )
        if kind in ("exact", "stream_exists"):
            await store.append(s, [ev(-1)], NO_STREAM)
        batch = [ev(1), ev(2)]
        original = await store.append(s, batch, expected)
        if situation == "after_more_events":
            await store.append(s, [ev(3)])
        elif situation == "after_soft_delete":
            await store.delete_stream(s)
        elif situation == "after_hard_delete":
            await store.delete_stream(s, hard=True)
        before = [e.event_id for e in await collect(store.read_all())]
        if situation == "after_hard_delete":
            with pytest.raises(StreamDeleted):
                await store.append(s, batch, expected)
        else:
            assert await store.append(s, batch, expected) == original
            async with store.transaction() as tx:  # the same answer inside a unit of work
                tx.append(s, batch, expected)
            assert tx.results == [original]
        assert [e.event_id for e in await collect(store.read_all())] == before
        if situation == "after_soft_delete":
            assert await store.stream_version(s) is None

    async def test_partly_matching_retry_after_delete_is_a_duplicate(
        self, store: EventStore
    ) -> None:
        """After a soft delete a retry that matches the stored events only partly raises
        DuplicateEventError and stores nothing."""
        _needs_deletion(store)
        s = StreamId("matrix", "partial")
        a, b = ev(1), ev(2)
        await store.append(s, [a, b])
        await store.delete_stream(s)
        with pytest.raises(chronik.DuplicateEventError):
            await store.append(s, [a, ev(3)])
        assert await store.stream_version(s) is None
