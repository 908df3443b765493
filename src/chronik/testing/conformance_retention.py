"""Conformance cases for stream retention and the scavenger (``chronik.store.retention``,
``chronik.lifecycle.scavenger``): part of ``EventStoreConformance``, run on adapters that declare
``supports_deletion`` and skipped on the others (which raise NotSupported)."""

from __future__ import annotations

import time

import pytest

from chronik import ANY, NO_STREAM, STREAM_EXISTS, EventData, Query, StreamId
from chronik.errors import (
    DuplicateEventError,
    NotSupported,
    StreamDeleted,
    ValidationError,
    WrongExpectedVersion,
)
from chronik.lifecycle.scavenger import ScavengeProgress, scavenge
from chronik.store.base import EventStore
from chronik.store.deletion import STREAM_DELETED
from chronik.store.retention import Retention
from chronik.testing.conformance_state import collect, ev

__all__ = ["RetentionConformance"]


def _needs_deletion(store: EventStore) -> None:
    if not store.supports_deletion:
        pytest.skip(f"{type(store).__name__} does not declare supports_deletion")


async def _sequences(store: EventStore, stream: StreamId) -> list[int]:
    return [e.sequence for e in await collect(store.read_stream(stream))]


class RetentionConformance:
    """Retention rules, truncation, and physical removal by the scavenger."""

    async def test_retention_is_refused_without_the_capability(self, store: EventStore) -> None:
        """A store without supports_deletion raises NotSupported for retention."""
        if store.supports_deletion:
            pytest.skip("the store supports deletion")
        with pytest.raises(NotSupported):
            await store.set_retention(StreamId("a", "b"), Retention(max_count=1))
        with pytest.raises(NotSupported):
            await scavenge(store)
        with pytest.raises(NotSupported):
            await store.compact_stream(StreamId("a", "b"), 0, ev(0))

    async def test_retention_rules_round_trip_and_truncation_acts_at_once(
        self, store: EventStore
    ) -> None:
        """set_retention stores the rules (even before the stream exists); truncate_before
        hides earlier events at once, only moves forward, and keeps the version."""
        _needs_deletion(store)
        s = StreamId("log", "r1")
        assert await store.get_retention(s) == Retention()
        stored = await store.set_retention(s, Retention(max_age=60.0, max_count=3))
        assert stored == Retention(60.0, 3) == await store.get_retention(s)
        assert await store.stream_version(s) is None
        await store.append(s, [ev(i) for i in range(5)], NO_STREAM)
        await store.set_retention(s, Retention(truncate_before=2))
        assert await store.get_retention(s) == Retention(truncate_before=2)
        assert await _sequences(store, s) == [2, 3, 4]
        assert await store.stream_version(s) == 4
        await store.set_retention(s, Retention(truncate_before=1))  # never backwards
        assert await _sequences(store, s) == [2, 3, 4]
        assert [r[0] for r in await store.read_stream_payloads(s)] == [2, 3, 4]
        with pytest.raises(ValidationError) as info:
            await store.set_retention(s, Retention(max_count=0))
        assert info.value.field == "max_count"
        with pytest.raises(ValidationError):
            await store.set_retention(s, Retention(max_age=-1.0))

    async def test_the_scavenger_removes_what_truncation_hides(self, store: EventStore) -> None:
        """Events below the truncation point leave the log for good (read_all, get_event);
        the stream keeps its version, appends continue, positions are never reused."""
        _needs_deletion(store)
        s, other = StreamId("log", "r2"), StreamId("log", "keep")
        await store.append(s, [ev(i) for i in range(4)], NO_STREAM)
        first_id = (await collect(store.read_stream(s)))[0].event_id
        await store.append(other, [ev(9)])
        await store.set_retention(s, Retention(truncate_before=3))
        dry = await scavenge(store, dry_run=True)
        assert (dry.streams, dry.events, dry.dry_run) == (1, 3, True) and dry.bytes > 0
        assert len(await collect(store.read_all())) == 5  # a dry run removes nothing
        report = await scavenge(store)
        assert (report.streams, report.events, report.bytes) == (1, 3, dry.bytes)
        assert report.removed == [(str(s), 3, dry.bytes)]
        logged = await collect(store.read_all())
        assert [(e.stream, e.sequence) for e in logged] == [(s, 3), (other, 0)]
        assert await store.get_event(first_id) is None
        assert await store.stream_version(s) == 3
        again = await store.append(s, [ev(4)], 3)
        assert again.first_sequence == 4 and again.position > logged[-1].position
        assert (await scavenge(store)).events == 0

    async def test_max_count_and_domain_defaults(self, store: EventStore) -> None:
        """max_count keeps the last N events; a domain default applies to streams without a
        rule of their own, and a stream's own rule wins over it."""
        _needs_deletion(store)
        a, b = StreamId("metrics", "a"), StreamId("metrics", "b")
        await store.append(a, [ev(i) for i in range(6)])
        await store.append(b, [ev(i) for i in range(6)])
        await store.set_retention(b, Retention(max_count=4))
        progress: list[ScavengeProgress] = []

        async def seen(p: ScavengeProgress) -> None:
            progress.append(p)

        report = await scavenge(
            store, {"metrics": Retention(max_count=2)}, batch_size=3, on_batch=seen
        )
        assert (report.streams, report.events) == (2, 6)
        assert progress and progress[-1].events == 6
        assert await _sequences(store, a) == [4, 5]
        assert await _sequences(store, b) == [2, 3, 4, 5]
        assert await store.stream_version(a) == 5

    async def test_max_age_removes_old_events(self, store: EventStore) -> None:
        """max_age removes events recorded longer ago than it (counted from ``now_us``);
        when every event is too old the stream reads empty and may start again."""
        _needs_deletion(store)
        s, other = StreamId("audit", "old"), StreamId("audit", "other")
        await store.append(s, [ev(0), ev(1)])
        await store.append(other, [ev(9)])  # the log's last event (SQLite keeps that one)
        await store.set_retention(s, Retention(max_age=3600.0))
        assert (await scavenge(store)).events == 0  # nothing is an hour old yet
        later = time.time_ns() // 1000 + 7200 * 1_000_000
        report = await scavenge(store, now_us=later)
        assert report.events == 2
        assert await store.stream_version(s) is None
        assert [e.stream for e in await collect(store.read_all())] == [other]
        restarted = await store.append(s, [ev(2)], NO_STREAM)
        assert restarted.first_sequence == 2

    async def test_deleted_streams_keep_their_deletion_event(self, store: EventStore) -> None:
        """Scavenging a deleted stream removes its events but its deletion event; a tombstone
        still refuses appends, a soft-deleted stream still continues its sequence."""
        _needs_deletion(store)
        soft, hard = StreamId("cart", "soft"), StreamId("cart", "hard")
        await store.append(soft, [ev(0), ev(1)])
        await store.append(hard, [ev(0)])
        await store.delete_stream(soft)
        await store.delete_stream(hard, hard=True)
        report = await scavenge(store)
        assert (report.streams, report.events) == (2, 3)
        left = await collect(store.read_all())
        assert [(e.stream, e.sequence, e.type) for e in left] == [
            (soft, 2, STREAM_DELETED),
            (hard, 1, STREAM_DELETED),
        ]
        assert (await scavenge(store)).events == 0
        with pytest.raises(StreamDeleted):
            await store.append(hard, [ev(5)])
        assert (await store.append(soft, [ev(3)], NO_STREAM)).first_sequence == 3

    @pytest.mark.parametrize(
        ("expected", "answer"),
        [
            (ANY, "new"),
            (NO_STREAM, "new"),
            (0, WrongExpectedVersion),
            (STREAM_EXISTS, WrongExpectedVersion),
        ],
    )
    async def test_idempotency_after_a_delete_and_a_scavenge(
        self, store: EventStore, expected: object, answer: object
    ) -> None:
        """Once scavenged, a soft-deleted stream's event ids are forgotten: a retry is a new
        append to an empty stream (ANY, NO_STREAM) or WrongExpectedVersion; after a hard
        delete it is StreamDeleted."""
        _needs_deletion(store)
        s, h = StreamId("matrix", f"scavenged-{expected}"), StreamId("matrix", f"hard-{expected}")
        if expected in (0, STREAM_EXISTS):
            await store.append(s, [ev(-1)])
            await store.append(h, [ev(-1)])
        batch, hard_batch = [ev(1), ev(2)], [ev(1), ev(2)]
        original = await store.append(s, batch, expected)  # type: ignore[arg-type]
        await store.append(h, hard_batch, expected)  # type: ignore[arg-type]
        await store.delete_stream(s)
        await store.delete_stream(h, hard=True)
        await scavenge(store)
        if answer == "new":
            retried = await store.append(s, batch, expected)  # type: ignore[arg-type]
            assert retried.first_sequence > original.last_sequence
            assert await store.stream_version(s) == retried.last_sequence
        else:
            with pytest.raises(WrongExpectedVersion):
                await store.append(s, batch, expected)  # type: ignore[arg-type]
        with pytest.raises(StreamDeleted):
            await store.append(h, hard_batch, expected)  # type: ignore[arg-type]

    async def test_readers_cope_with_holes_left_by_the_scavenger(self, store: EventStore) -> None:
        """A reader positioned inside a removed range goes on with the next stored event;
        a subscription started after scavenging never waits for removed positions."""
        _needs_deletion(store)
        s, keep = StreamId("holes", "s"), StreamId("holes", "k")
        await store.append(s, [ev(0)])
        middle = await store.append(s, [ev(1)])
        await store.append(keep, [ev(2)])
        await store.set_retention(s, Retention(truncate_before=2))
        await scavenge(store)
        after = await collect(store.read_all(after=middle.position))
        assert [(e.stream, e.sequence) for e in after] == [(keep, 0)]
        live = await store.append(keep, [ev(3)])
        seen = []
        async with store.subscribe(after=middle.position, domains=["holes"]) as sub:
            async for event in sub:
                seen.append(event.position)
                if event.position == live.position:
                    break
        assert len(seen) == 2

    async def test_compaction_closes_the_books(self, store: EventStore) -> None:
        """compact_stream puts the summary in place of the event at ``upto`` (its sequence
        and position kept) and hides the events before it at once; later events keep theirs;
        after a scavenge a rebuild reads the summary first; a retry answers the stored
        event, a misplaced id is a duplicate, a sequence the stream does not show is refused."""
        _needs_deletion(store)
        s, other = StreamId("ledger", "l1"), StreamId("ledger", "x")
        r = await store.append(s, [ev(i, tags=["ledger:l1"]) for i in range(5)])
        await store.append(other, [ev(9)])
        closed = EventData(
            "ledger.books_closed", {"total": 6}, event_id="close-l1", tags=["ledger:l1"]
        )
        done = await store.compact_stream(s, 3, closed)
        assert (done.sequence, done.position, done.type) == (3, r.positions[3], closed.type)
        assert done.json() == {"total": 6} and done.tags == ("ledger:l1",)
        shown = await collect(store.read_stream(s))
        assert [(e.sequence, e.type) for e in shown] == [(3, closed.type), (4, "thing.happened")]
        assert shown[1].position == r.positions[4] and await store.stream_version(s) == 4
        assert await store.compact_stream(s, 3, closed) == done
        with pytest.raises(DuplicateEventError):
            await store.compact_stream(s, 4, closed)
        for hidden in (1, 9):
            with pytest.raises(ValidationError) as info:
                await store.compact_stream(s, hidden, ev(0))
            assert info.value.field == "upto"
        assert (await scavenge(store)).events == 3
        rebuilt = [(e.stream, e.sequence, e.type) async for e in store.read_all()]
        assert rebuilt == [
            (s, 3, closed.type),
            (s, 4, "thing.happened"),
            (other, 0, "thing.happened"),
        ]
        assert await store.get_event("close-l1") == done
        tagged = [e.event_id async for e in store.read_query(Query.of(tags=["ledger:l1"]))]
        assert tagged == ["close-l1", shown[1].event_id]
