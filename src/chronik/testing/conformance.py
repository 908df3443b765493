"""The event store conformance suite: the semantics every adapter must meet.

Written once against the EventStore port and run against every adapter. To check an adapter,
subclass ``EventStoreConformance`` in a pytest module (pytest-asyncio in auto mode) and provide
a ``make_store`` fixture that returns an async factory of fresh, empty, opened stores accepting
the common options (``max_payload_bytes``, ``max_append_events``)::

    class TestMyStore(EventStoreConformance):
        @pytest.fixture
        async def make_store(self, tmp_path):
            stores = []
            async def make(**options):
                store = await MyStore(f"my://{tmp_path}/{len(stores)}", **options).open()
                stores.append(store)
                return store
            yield make
            for store in stores:
                await store.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import chronik
from chronik import NO_STREAM, EventData, StreamId
from chronik.store.base import EventStore

__all__ = ["EventStoreConformance", "StoreFactory"]

from chronik.testing.conformance_deletion import DeletionConformance
from chronik.testing.conformance_faults import FaultConformance
from chronik.testing.conformance_reads import ReadConformance
from chronik.testing.conformance_retention import RetentionConformance
from chronik.testing.conformance_state import StateConformance, collect, ev

StoreFactory = Callable[..., Awaitable[EventStore]]


class EventStoreConformance(
    ReadConformance, StateConformance, FaultConformance, DeletionConformance, RetentionConformance
):
    """Subclass with a ``make_store`` fixture; every test here must pass for the adapter."""

    @pytest.fixture
    async def store(self, make_store: StoreFactory) -> EventStore:
        return await make_store()

    # --- appends and versions -----------------------------------------------------------------

    async def test_sequences_are_zero_based_and_gapless(self, store: EventStore) -> None:
        """Appends number events 0, 1, 2... per stream; AppendResult reports the range taken."""
        s = StreamId("order", "o1")
        assert await store.stream_version(s) is None
        r1 = await store.append(s, [ev(0), ev(1)], NO_STREAM)
        r2 = await store.append(s, [ev(2)], 1)
        assert (r1.stream, r1.first_sequence, r1.last_sequence) == (s, 0, 1)
        assert (r2.first_sequence, r2.last_sequence) == (2, 2)
        assert r1.position < r2.position
        assert await store.stream_version(s) == 2
        events = await collect(store.read_stream(s))
        assert [e.sequence for e in events] == [0, 1, 2]
        assert [e.json()["n"] for e in events] == [0, 1, 2]
        assert events[-1].position == r2.position

    @pytest.mark.parametrize(
        ("expected", "ok_when_missing", "ok_at_0", "ok_at_1"),
        [
            (chronik.ANY, True, True, True),
            (chronik.NO_STREAM, True, False, False),
            (chronik.STREAM_EXISTS, False, True, True),
            (0, False, True, False),
            (1, False, False, True),
        ],
    )
    async def test_every_expectation_kind(
        self,
        make_store: StoreFactory,
        expected: chronik.Expected,
        ok_when_missing: bool,
        ok_at_0: bool,
        ok_at_1: bool,
    ) -> None:
        """Each expectation kind accepts exactly the stream states it names."""
        for version, ok in ((None, ok_when_missing), (0, ok_at_0), (1, ok_at_1)):
            store = await make_store()
            s = StreamId("acct", "a1")
            if version is not None:
                await store.append(s, [ev(i) for i in range(version + 1)])
            head = await store.head()
            if ok:
                await store.append(s, [ev(9)], expected)
            else:
                with pytest.raises(chronik.WrongExpectedVersion) as info:
                    await store.append(s, [ev(9)], expected)
                assert info.value.expected == expected and info.value.actual == version
                assert info.value.stream == s
                assert await store.head() == head
                assert await store.stream_version(s) == version

    async def test_concurrent_appenders_exactly_one_wins_each_version(
        self, store: EventStore
    ) -> None:
        """Of 20 concurrent appenders with the same expectation, exactly one wins each round."""
        s = StreamId("race", "r1")
        expected: chronik.Expected = NO_STREAM
        for round_ in range(5):
            outcomes = await asyncio.gather(
                *(store.append(s, [ev(i)], expected) for i in range(20)), return_exceptions=True
            )
            wins = [o for o in outcomes if isinstance(o, chronik.AppendResult)]
            assert len(wins) == 1
            assert all(
                isinstance(o, chronik.WrongExpectedVersion) for o in outcomes if o not in wins
            )
            assert wins[0].last_sequence == round_
            expected = round_
        assert len(await collect(store.read_stream(s))) == 5

    # --- idempotency --------------------------------------------------------------------------

    async def test_retry_after_nothing_returns_the_original_result(self, store: EventStore) -> None:
        """Re-appending the same events with the same expectation returns the first result."""
        s = StreamId("idem", "i1")
        batch = [ev(0), ev(1)]
        first = await store.append(s, batch, NO_STREAM)
        for expected in (NO_STREAM, chronik.ANY):
            assert await store.append(s, batch, expected) == first
        assert len(await collect(store.read_all())) == 2

    async def test_retry_after_later_appends_returns_the_original_result(
        self, store: EventStore
    ) -> None:
        """A retry after other events were appended still returns the original result."""
        s = StreamId("idem", "i2")
        await store.append(s, [ev(0)], NO_STREAM)
        batch = [ev(1), ev(2)]
        first = await store.append(s, batch, 0)
        await store.append(s, [ev(3)], 2)
        assert await store.append(s, batch, 0) == first
        assert await store.append(s, batch, chronik.ANY) == first
        assert [e.json()["n"] for e in await collect(store.read_stream(s))] == [0, 1, 2, 3]

    async def test_same_id_with_different_content_is_a_duplicate(self, store: EventStore) -> None:
        """An event id reused with other content, type, or in another stream is refused."""
        s = StreamId("idem", "i3")
        original = ev(0)
        await store.append(s, [original], NO_STREAM)
        head = await store.head()
        variants = [
            (s, EventData(original.type, {"n": 99}, event_id=original.event_id)),
            (s, EventData("other.type", {"n": 0}, event_id=original.event_id)),
            (
                StreamId("idem", "elsewhere"),
                EventData(original.type, {"n": 0}, event_id=original.event_id),
            ),
        ]
        for stream, variant in variants:
            with pytest.raises(chronik.DuplicateEventError):
                await store.append(stream, [variant])
            with pytest.raises(chronik.DuplicateEventError):
                await store.append(stream, [variant], NO_STREAM)
        partial = [original, ev(1)]  # one stored id, one new: not the same append
        with pytest.raises(chronik.DuplicateEventError):
            await store.append(s, partial)
        assert await store.head() == head

    # --- units of work ------------------------------------------------------------------------

    async def test_unit_of_work_commits_all_streams(self, store: EventStore) -> None:
        """A unit appends to several streams (and twice to one), one result per append."""
        a, b = StreamId("account", "a1"), StreamId("account", "a2")
        await store.append(a, [ev(0)])
        async with store.transaction() as tx:
            tx.append(a, [ev(1)], 0)
            tx.append(b, [ev(2), ev(3)], NO_STREAM)
            tx.append(a, [ev(4)], 1)
        assert [(r.stream, r.first_sequence, r.last_sequence) for r in tx.results] == [
            (a, 1, 1),
            (b, 0, 1),
            (a, 2, 2),
        ]
        assert await store.stream_version(a) == 2 and await store.stream_version(b) == 1

    async def test_unit_of_work_with_a_wrong_expectation_writes_nothing(
        self, store: EventStore
    ) -> None:
        """One failing expectation fails the unit, naming the stream, and nothing is written."""
        a, b = StreamId("account", "a1"), StreamId("account", "a2")
        await store.append(a, [ev(0)])
        head = await store.head()
        with pytest.raises(chronik.WrongExpectedVersion) as info:
            async with store.transaction() as tx:
                tx.append(b, [ev(1)], NO_STREAM)
                tx.append(a, [ev(2)], 5)
        assert info.value.stream == a and info.value.actual == 0
        assert await store.head() == head
        assert await store.stream_version(b) is None

    async def test_exception_inside_a_unit_writes_nothing(self, store: EventStore) -> None:
        """An exception raised in the ``async with`` body discards the unit."""
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                tx.append(StreamId("account", "a1"), [ev(0)])
                raise RuntimeError("changed my mind")
        assert await store.head() is None

    # --- subscriptions ------------------------------------------------------------------------

    async def test_subscribe_catches_up_then_follows_live(self, store: EventStore) -> None:
        """A subscription delivers stored then live events once each, in order, from writers."""
        for i in range(30):
            await store.append(StreamId("sub", f"s{i % 3}"), [ev(i)])
        sub = store.subscribe()
        got: list[chronik.RecordedEvent] = []

        async def consume() -> None:
            async for e in sub:
                got.append(e)
                if len(got) == 130:
                    return

        task = asyncio.create_task(consume())

        async def writer(k: int) -> None:
            for i in range(25):
                await store.append(StreamId("sub", f"w{k}"), [ev(1000 * k + i)])
                if i % 5 == 0:
                    await asyncio.sleep(0.001)

        await asyncio.gather(*(writer(k) for k in range(1, 5)))
        await asyncio.wait_for(task, 10)
        # the last page may have come before the store settled: one more read says caught up
        waiting = asyncio.ensure_future(sub.__anext__())
        for _ in range(500):
            if sub.caught_up:
                break
            await asyncio.sleep(0.01)
        assert sub.caught_up and not waiting.done()
        waiting.cancel()
        assert got == await collect(store.read_all())
        await sub.close()

    async def test_subscribe_resumes_and_filters(self, store: EventStore) -> None:
        """A subscription starts after a position and sees only the domains/types asked for."""
        for i in range(10):
            await store.append(StreamId("a" if i % 2 else "b", "x"), [ev(i, f"t.{i % 3}")])
        events = await collect(store.read_all())
        async with store.subscribe(after=events[4].position) as sub:
            resumed = [await anext(sub) for _ in range(5)]
        assert resumed == events[5:]
        async with store.subscribe(domains=["a"], types=["t.1", "t.2"]) as sub:
            wanted = [e for e in events if e.stream.domain == "a" and e.type != "t.0"]
            got = [await anext(sub) for _ in range(len(wanted))]
            assert got == wanted
            live = await store.append(StreamId("a", "x"), [ev(99, "t.1")])
            await store.append(StreamId("b", "x"), [ev(100, "t.1")])
            nxt = await asyncio.wait_for(anext(sub), 5)
            assert nxt.position == live.position

    async def test_closing_a_subscription_ends_iteration(self, store: EventStore) -> None:
        """close() ends a subscription that is waiting for live events."""
        sub = store.subscribe()

        async def drain() -> int:
            return len([e async for e in sub])

        task = asyncio.create_task(drain())
        await store.append(StreamId("sub", "s"), [ev()])
        await asyncio.sleep(0.05)
        await sub.close()
        assert await asyncio.wait_for(task, 5) == 1

    # --- bad input ----------------------------------------------------------------------------

    async def test_bad_input_is_typed_and_stores_nothing(self, make_store: StoreFactory) -> None:
        """Each kind of bad input raises its ValidationError subclass; nothing is stored."""
        store = await make_store(max_payload_bytes=1000, max_append_events=5)
        s = StreamId("ok", "fine")
        cases: list[tuple[type[Exception], Callable[[], Awaitable[Any]]]] = [
            (chronik.InvalidEventType, lambda: store.append(s, [EventData("bad type!", {})])),
            (chronik.InvalidEventType, lambda: store.append(s, [EventData("", {})])),
            (chronik.PayloadTooLarge, lambda: store.append(s, [EventData("t", {"x": "y" * 1000})])),
            (chronik.PayloadTooLarge, lambda: store.append(s, [EventData("t", b"1" * 1001)])),
            (chronik.TooManyEvents, lambda: store.append(s, [ev(i) for i in range(6)])),
            (chronik.SerializationError, lambda: store.append(s, [EventData("t", {"x": {1j}})])),
            (chronik.SerializationError, lambda: store.append(s, [EventData("t", object())])),
            (chronik.SerializationError, lambda: store.append(s, [EventData("t", b"{nope")])),
            (chronik.ValidationError, lambda: store.append(s, [])),
            (chronik.ValidationError, lambda: store.append(s, [ev(), {"type": "x"}])),  # type: ignore[list-item]
            (chronik.ValidationError, lambda: store.append(s, [EventData("t", {}, {"k": 1})])),  # type: ignore[dict-item]
            (
                chronik.ValidationError,
                lambda: store.append(s, [EventData("t", {}, schema_version=0)]),
            ),
            (chronik.ValidationError, lambda: store.append("ok/fine", [ev()])),  # type: ignore[arg-type]
        ]
        same = ev()
        cases.append((chronik.ValidationError, lambda: store.append(s, [same, same])))
        for bad in ("foo", -1, True, 1.5, None):
            cases.append(
                (chronik.InvalidExpectedVersion, lambda bad=bad: store.append(s, [ev()], bad))  # type: ignore[misc]
            )
        for error, call in cases:
            with pytest.raises(error):
                await call()
        assert await store.head() is None
        with pytest.raises(chronik.InvalidStreamId):
            StreamId("Bad Domain", "x")
        default = await make_store()
        with pytest.raises(chronik.PayloadTooLarge):
            await default.append(s, [EventData("t", {"x": "y" * (1024 * 1024)})])
        with pytest.raises(chronik.TooManyEvents):
            await default.append(s, [ev(i) for i in range(1001)])
        assert await default.head() is None
