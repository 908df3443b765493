"""The DCB conformance suite: tags, queries and append conditions, on every adapter.

Mix ``DCBConformance`` into a test class that has a ``store`` fixture (an opened, empty store),
as ``EventStoreConformance`` subclasses do::

    class TestMyStore(EventStoreConformance, DCBConformance): ...
"""

from __future__ import annotations

import asyncio

import pytest

from chronik import (
    NO_STREAM,
    AppendCondition,
    AppendConditionFailed,
    EventData,
    Query,
    QueryItem,
    StreamId,
)
from chronik.errors import DuplicateEventError, ValidationError, WrongExpectedVersion
from chronik.store.base import EventStore
from chronik.store.read import READ_PAGE
from chronik.store.tables import TableSpec, TableWrite
from chronik.testing.conformance_state import collect

__all__ = ["DCBConformance"]


def tagged(etype: str, *tags: str, n: int = 0) -> EventData:
    """A small tagged event for tests."""
    return EventData(etype, {"n": n}, tags=list(tags))


def course(c: str) -> Query:
    """The events of course ``c``."""
    return Query([QueryItem(tags=[f"course:{c}"])])


class DCBConformance:
    """Tags on events, query reads, append conditions, check-only expectations, retries."""

    async def test_tags_come_back_sorted_on_every_read(self, store: EventStore) -> None:
        """Tags of stream and tagged events come back sorted, without repeats, from every read;
        an untagged event has none."""
        s = StreamId("course", "c1")
        tagged_event = tagged("course.defined", "course:c1", "area:math", "course:c1")
        plain = EventData("course.renamed", {"n": 1})
        await store.append(s, [tagged_event, plain])
        expected = ("area:math", "course:c1")
        assert [e.tags for e in await collect(store.read_stream(s))] == [expected, ()]
        assert [e.tags for e in await collect(store.read_all())] == [expected, ()]
        got = await store.get_event(tagged_event.event_id)
        assert got is not None and got.tags == expected
        assert got.to_dict()["tags"] == list(expected)

    @pytest.mark.parametrize(
        "tags",
        [
            ["has space"],
            [""],
            ["x" * 129],
            ["bad\x00nul"],
            [7],
            "course:c1",
            ["t"] * 0 + [f"t{i}" for i in range(33)],
        ],
    )
    async def test_bad_tags_are_refused_naming_the_field(
        self, store: EventStore, tags: object
    ) -> None:
        """A tag out of shape (space, empty, too long, control character, not a str) or too
        many tags is a ValidationError naming ``tags``; nothing is stored."""
        with pytest.raises(ValidationError) as err:
            await store.append(StreamId("t", "t1"), [EventData("t", tags=tags)])  # type: ignore[arg-type]
        assert err.value.field == "tags"
        with pytest.raises(ValidationError):
            await store.append_tagged([EventData("t", tags=tags)])  # type: ignore[arg-type]
        assert await store.head() is None

    async def test_query_semantics(self, store: EventStore) -> None:
        """An item matches one of its types (any when none) with all its tags; a query matches
        any item; results come in the global order."""
        events = [
            tagged("course.defined", "course:c1"),
            tagged("student.registered", "student:s1"),
            tagged("student.subscribed", "course:c1", "student:s1"),
            tagged("student.subscribed", "course:c2", "student:s1"),
            tagged("course.defined", "course:c2"),
            EventData("other.thing", {"n": 0}),
        ]
        await store.append_tagged(events[:3])
        await store.append(StreamId("course", "c2"), events[3:5])
        await store.append_tagged(events[5:])

        async def ids(query: Query) -> list[int]:
            order = [e.event_id for e in events]
            return [order.index(e.event_id) for e in await collect(store.read_query(query))]

        assert await ids(course("c1")) == [0, 2]
        assert await ids(Query([QueryItem(["student.subscribed"], ["student:s1"])])) == [2, 3]
        both = Query([QueryItem(tags=["course:c1", "student:s1"])])
        assert await ids(both) == [2]
        types = Query([QueryItem(["course.defined", "other.thing"])])
        assert await ids(types) == [0, 4, 5]
        assert await ids(
            Query([QueryItem(tags=["student:s1"]), QueryItem(tags=["course:c2"])])
        ) == [1, 2, 3, 4]
        assert await ids(Query.all()) == [0, 1, 2, 3, 4, 5]
        assert await ids(Query.of(tags=["nobody:x"])) == []
        assert await ids(Query([QueryItem(["nothing.like.this"])])) == []

    async def test_query_payload_rows_match_read_query(self, store: EventStore) -> None:
        """``read_query_payloads``: each event ``read_query`` gives, once, in order, paged from
        ``after``: type, JSON schema version (none for other content), payload, position."""
        events = [
            tagged("course.defined", "course:c1"),
            tagged("student.registered", "student:s1"),
            tagged("student.subscribed", "course:c1", "student:s1", n=1),
            EventData("course.file", b"\x00raw", content_type="application/octet-stream"),
            tagged("student.subscribed", "course:c2", "student:s1", n=2),
            EventData("course.renamed", {"n": 3}, schema_version=2, tags=["course:c1"]),
        ]
        await store.append_tagged(events[:3])
        await store.append(StreamId("course", "c1"), [events[3]], NO_STREAM)
        await store.append_tagged(events[4:])
        course_types = ["course.defined", "student.subscribed", "course.renamed"]
        on_course = QueryItem(course_types, ["course:c1"])
        on_student = QueryItem(["student.registered", "student.subscribed"], ["student:s1"])
        query = Query([on_course, on_student, QueryItem(["course.file"])])
        whole = await collect(store.read_query(query))
        assert [e.event_id for e in whole] == [e.event_id for e in events]
        rows = await store.read_query_payloads(query)
        assert [(r[0], r[2], r[3], r[4]) for r in rows] == [
            (e.type, e.payload, e.position.commit, e.position.index) for e in whole
        ]
        assert [r[1] for r in rows if r[0] != "course.file"] == [1, 1, 1, 1, 2]
        assert next(r[1] for r in rows if r[0] == "course.file") not in range(1, 1_000_001)
        parts, after = [e.position for e in whole], whole[2].position
        page = await store.read_query_payloads(query, after, limit=2)
        assert [(r[3], r[4]) for r in page] == [(p.commit, p.index) for p in parts[3:5]]
        assert await store.read_query_payloads(Query.of(tags=["nobody:x"])) == []
        with pytest.raises(ValidationError) as err:
            await store.read_query_payloads(query, after="7")  # type: ignore[arg-type]
        assert err.value.field == "after"

    async def test_read_query_after_limit_and_backward(self, store: EventStore) -> None:
        """``after`` skips what came before, ``limit`` cuts, ``backward`` reads newest first
        (before ``after``), over more matches than one page holds."""
        n = READ_PAGE + 50
        for start in range(0, n, 250):
            batch = []
            for i in range(start, min(start + 250, n)):
                batch.append(tagged("seat.taken", "course:c1", n=i))
                batch.append(tagged("seat.taken", "course:c9", n=i))  # not wanted
            await store.append_tagged(batch)
        forward = await collect(store.read_query(course("c1")))
        assert [e.json()["n"] for e in forward] == list(range(n))
        assert [e.position for e in forward] == sorted(e.position for e in forward)
        middle = forward[10].position
        after = await collect(store.read_query(course("c1"), after=middle, limit=5))
        assert [e.json()["n"] for e in after] == [11, 12, 13, 14, 15]
        back = await collect(store.read_query(course("c1"), backward=True))
        assert [e.json()["n"] for e in back] == list(reversed(range(n)))
        before = await collect(store.read_query(course("c1"), after=middle, backward=True, limit=3))
        assert [e.json()["n"] for e in before] == [9, 8, 7]
        assert await collect(store.read_query(course("c1"), limit=0)) == []

    async def test_tagged_events_have_a_stream_each(self, store: EventStore) -> None:
        """Each tagged event is the only event of its own stream (domain, event id) in the
        one global order; the result has a position per event."""
        a, b = tagged("seat.taken", "course:c1"), tagged("seat.taken", "course:c2")
        result = await store.append_tagged([a, b])
        assert len(result.positions) == 2 and result.position == result.positions[-1]
        events = await collect(store.read_all())
        assert [e.event_id for e in events] == [a.event_id, b.event_id]
        assert [e.position for e in events] == list(result.positions)
        assert [(e.stream, e.sequence) for e in events] == [
            (StreamId("dcb", a.event_id), 0),
            (StreamId("dcb", b.event_id), 0),
        ]
        own = await store.append_tagged([tagged("x", "k:v")], domain="booking", tenant="t1")
        assert own.stream.domain == "booking" and own.stream.tenant == "t1"

    async def test_condition_fails_on_a_match_after_its_position(self, store: EventStore) -> None:
        """A matching event after ``after`` fails the append with AppendConditionFailed naming
        the item and the first match's position; nothing is written."""
        first = await store.append_tagged([tagged("course.defined", "course:c1")])
        second = await store.append_tagged([tagged("student.subscribed", "course:c1")])
        await store.append_tagged([tagged("student.subscribed", "course:c1")])
        head = await store.head()
        query = Query([QueryItem(tags=["course:c9"]), QueryItem(tags=["course:c1"])])
        with pytest.raises(AppendConditionFailed) as err:
            await store.append_tagged(
                [tagged("student.subscribed", "course:c1", "student:s1")],
                AppendCondition(query, after=first.position),
            )
        assert err.value.item == 1 and err.value.position == second.position
        assert "course:c1" in str(err.value)
        assert await store.head() == head

    async def test_condition_passes_when_nothing_matches_after_it(self, store: EventStore) -> None:
        """Matches at or before ``after`` and non-matching events after it let the append
        through."""
        await store.append_tagged([tagged("course.defined", "course:c1")])
        read = await collect(store.read_query(course("c1")))
        await store.append_tagged([tagged("course.defined", "course:c2")])
        await store.append(StreamId("other", "o1"), [EventData("x")])
        cond = AppendCondition(course("c1"), after=read[-1].position)
        result = await store.append_tagged([tagged("seat.taken", "course:c1")], cond)
        assert result.position == await store.head()

    async def test_condition_without_position_is_a_uniqueness_claim(
        self, store: EventStore
    ) -> None:
        """With ``after=None`` any match fails: the first claim of a username wins, the second
        gets AppendConditionFailed; another username is free."""
        claim = Query.of(types=["username.claimed"], tags=["username:ada"])
        await store.append_tagged(
            [tagged("username.claimed", "username:ada")], AppendCondition(claim)
        )
        with pytest.raises(AppendConditionFailed) as err:
            await store.append_tagged(
                [tagged("username.claimed", "username:ada")], AppendCondition(claim)
            )
        assert err.value.item == 0
        other = Query.of(types=["username.claimed"], tags=["username:bob"])
        await store.append_tagged(
            [tagged("username.claimed", "username:bob")], AppendCondition(other)
        )
        assert len(await collect(store.read_all())) == 2

    async def test_retry_returns_the_original_result(self, store: EventStore) -> None:
        """Appending the same events again (same ids, same condition) after an unknown outcome
        returns the original result and stores nothing twice, though the condition now matches
        the events themselves; other content under a stored id is a DuplicateEventError."""
        claim = AppendCondition(Query.of(tags=["username:ada"]))
        events = [tagged("username.claimed", "username:ada"), tagged("profile.set", "username:ada")]
        first = await store.append_tagged(events, claim)
        again = await store.append_tagged(events, claim)
        assert again.positions == first.positions and again.position == first.position
        assert len(await collect(store.read_all())) == 2
        changed = [
            EventData(
                "username.claimed", {"n": 9}, event_id=events[0].event_id, tags=["username:ada"]
            )
        ]
        with pytest.raises(DuplicateEventError):
            await store.append_tagged(changed, claim)
        tag_changed = [
            EventData(
                "username.claimed", {"n": 0}, event_id=events[0].event_id, tags=["username:eve"]
            )
        ]
        with pytest.raises(DuplicateEventError):
            await store.append_tagged(tag_changed)

    async def test_unit_of_work_is_all_or_nothing(self, store: EventStore) -> None:
        """``tx.append_tagged`` commits with stream appends and table writes; a failing
        condition fails the whole unit; ``tx.results`` has one result per call."""
        s = StreamId("course", "c1")
        spec = TableSpec("dcb_seats", (("course", "TEXT"), ("n", "INTEGER")), ("course",))

        def seats(n: int) -> TableWrite:
            return TableWrite.upsert(spec.name, {"course": "c1", "n": n}, ("course",))

        table = store.supports_tables
        await store.append_tagged([tagged("course.defined", "course:c1")])
        async with store.transaction() as tx:
            tx.append(s, [EventData("course.opened")], NO_STREAM)
            tx.append_tagged([tagged("seat.taken", "course:c1"), tagged("seat.taken", "course:c1")])
            if table:
                tx.write_tables(
                    [
                        TableWrite("ensure", spec.name, spec=spec),
                        TableWrite.upsert(spec.name, {"course": "c1", "n": 2}, ("course",)),
                    ]
                )
        stream_result, tagged_result = tx.results
        assert stream_result.stream == s and len(tagged_result.positions) == 2
        head = await store.head()
        with pytest.raises(AppendConditionFailed):
            async with store.transaction() as tx:
                tx.append(s, [EventData("course.closed")], 0)
                tx.append_tagged([tagged("seat.taken", "course:c1")], AppendCondition(course("c1")))
                if table:
                    tx.write_tables(
                        [TableWrite.upsert(spec.name, {"course": "c1", "n": 3}, ("course",))]
                    )
        assert await store.head() == head
        assert await store.stream_version(s) == 0
        if table:
            assert await store.read_table(spec.name) == [{"course": "c1", "n": 2}]

    async def test_conditions_see_the_store_before_the_unit(self, store: EventStore) -> None:
        """Two tagged appends in one unit: the second's condition does not see the first's
        events (both were decided from the same read)."""
        async with store.transaction() as tx:
            tx.append_tagged([tagged("seat.taken", "course:c1")], AppendCondition(course("c1")))
            tx.append_tagged([tagged("seat.taken", "course:c1")], AppendCondition(course("c1")))
        assert len(await collect(store.read_query(course("c1")))) == 2

    async def test_expect_checks_a_stream_it_does_not_write(self, store: EventStore) -> None:
        """``tx.expect`` passes when the stream is at the version, else WrongExpectedVersion
        fails the whole unit."""
        s, other = StreamId("account", "a1"), StreamId("ledger", "l1")
        await store.append(s, [EventData("opened"), EventData("credited")])
        async with store.transaction() as tx:
            tx.expect(s, 1)
            tx.expect(StreamId("account", "none"), NO_STREAM)
            tx.append(other, [EventData("posted")])
        with pytest.raises(WrongExpectedVersion) as err:
            async with store.transaction() as tx:
                tx.expect(s, 0)
                tx.append(other, [EventData("posted")])
        assert err.value.actual == 1
        assert await store.stream_version(other) == 0
        with pytest.raises(ValidationError):
            store.transaction().expect(s, -5)

    async def test_expect_does_not_block_a_retry(self, store: EventStore) -> None:
        """A retried unit (its events stored) returns its results though the expected stream
        moved since."""
        s, other = StreamId("account", "a1"), StreamId("ledger", "l1")
        await store.append(s, [EventData("opened")])
        events = [EventData("posted")]
        async with store.transaction() as tx:
            tx.expect(s, 0)
            tx.append(other, events)
        first = tx.results[0]
        await store.append(s, [EventData("credited")])
        async with store.transaction() as tx:
            tx.expect(s, 0)
            tx.append(other, events)
        assert tx.results[0].position == first.position

    async def test_subscribe_follows_a_query(self, store: EventStore) -> None:
        """``subscribe(query=...)`` delivers the stored matches, then live ones, and nothing
        else."""
        await store.append_tagged(
            [tagged("seat.taken", "course:c1", n=0), tagged("seat.taken", "course:c2", n=1)]
        )
        got: list[int] = []
        async with store.subscribe(query=course("c1")) as sub:
            async for event in sub:
                got.append(event.json()["n"])
                if len(got) == 1:
                    await store.append(
                        StreamId("x", "x1"), [tagged("seat.taken", "course:c2", n=2)]
                    )
                    await store.append_tagged([tagged("seat.taken", "course:c1", n=3)])
                if len(got) == 2:
                    break
        assert got == [0, 3]

    async def test_disjoint_conditions_never_fail_each_other(self, store: EventStore) -> None:
        """Concurrent conditional appends on different tags all succeed (no false conflicts);
        on the same uniqueness claim exactly one does."""

        async def claim(tag: str) -> bool:
            try:
                await store.append_tagged(
                    [tagged("username.claimed", tag)], AppendCondition(Query.of(tags=[tag]))
                )
            except AppendConditionFailed:
                return False
            return True

        assert all(await asyncio.gather(*(claim(f"username:u{i}") for i in range(16))))
        won = await asyncio.gather(*(claim("username:same") for _ in range(16)))
        assert won.count(True) == 1

    async def test_bad_queries_and_conditions_are_refused(self, store: EventStore) -> None:
        """Malformed queries, positions and conditions are ValidationErrors naming the field."""
        cases: list[tuple[object, str]] = []
        for make, field in (
            (lambda: Query([]), "items"),
            (lambda: Query([QueryItem(types=["bad type"])]), "types"),
            (lambda: QueryItem(tags=["a b"]), "tags"),
            (lambda: AppendCondition("q"), "fail_if_events_match"),  # type: ignore[arg-type]
            (lambda: AppendCondition(Query.all(), after="7"), "after"),  # type: ignore[arg-type]
        ):
            with pytest.raises(ValidationError) as err:
                make()
            cases.append((err.value, field))
        assert [e.field for e, _ in cases] == [f for _, f in cases]  # type: ignore[attr-defined]
        with pytest.raises(ValidationError) as err:
            await collect(store.read_query("course:c1"))  # type: ignore[arg-type]
        assert err.value.field == "query"
        with pytest.raises(ValidationError) as err:
            await store.append_tagged([tagged("x", "k:v")], condition="no")  # type: ignore[arg-type]
        assert err.value.field == "condition"
        with pytest.raises(ValidationError):
            await store.append_tagged([])
        assert await store.head() is None
