"""PostgreSQL schema 11's stream append functions: an untagged append of one type takes its locks
in one statement, and a held append condition still excludes exactly the writers it could
match; the stream row's one-statement update keeps every status."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from chronik import (
    NO_STREAM,
    STREAM_EXISTS,
    AppendCondition,
    EventData,
    Query,
    QueryItem,
    StreamId,
    WrongExpectedVersion,
)
from chronik.errors import StreamDeleted
from chronik.store.postgres import PostgresEventStore
from chronik.store.postgres.locks import lock_arrays
from chronik.store.postgres.schema import split_url
from tests.integration.test_postgres_dcb import HeldStatement, store, until_waiting

__all__ = ["store"]  # the fixture, shared with the DCB tests

pytestmark = pytest.mark.timeout(60)


def sold(n: int, etype: str = "ticket.sold") -> EventData:
    """An untagged event of ``etype``."""
    return EventData(etype, {"n": n})


@pytest.mark.parametrize("count", [1, 3])
async def test_a_held_type_condition_holds_untagged_appends_of_that_type_only(
    store: PostgresEventStore, count: int
) -> None:
    """While a condition on type ticket.sold is held, an untagged append of ``count`` such
    events waits (then takes a later position); an append of another type passes at once."""
    held_event = EventData("ticket.sold", {"n": 0}, tags=["gate:1"])
    condition = AppendCondition(Query([QueryItem(types=["ticket.sold"])]))
    async with HeldStatement(store, [held_event], condition) as held:
        assert held.status == 0
        plain = asyncio.create_task(
            store.append(StreamId("t", "a"), [sold(n) for n in range(count)])
        )
        await until_waiting(store)
        other = await asyncio.wait_for(
            store.append(StreamId("t", "b"), [sold(9, "ticket.voided")]), 2
        )
        assert not plain.done()
    result = await asyncio.wait_for(plain, 10)
    assert held.positions[0] < result.position
    assert other.position < result.position


async def test_a_held_condition_on_everything_holds_any_untagged_append(
    store: PostgresEventStore,
) -> None:
    """A held condition with an empty item (it matches every event: key ``*`` exclusive) makes
    untagged appends of any type wait, single events and runs of one type alike."""
    held_event = EventData("door.opened", {"n": 0}, tags=["door:1"])
    async with HeldStatement(store, [held_event], AppendCondition(Query.all())):
        one = asyncio.create_task(store.append(StreamId("t", "a"), [sold(1, "x.y")]))
        many = asyncio.create_task(store.append(StreamId("t", "b"), [sold(2), sold(3)]))
        await until_waiting(store, 2)
        assert not one.done() and not many.done()
    assert (await asyncio.wait_for(one, 10)).last_sequence == 0
    assert (await asyncio.wait_for(many, 10)).last_sequence == 1


async def test_every_expectation_status_through_the_one_statement_update(
    store: PostgresEventStore,
) -> None:
    """Each expectation against an existing, a soft-deleted and a tombstoned stream: the
    versions reported on a mismatch and the sequences written on success."""
    s = StreamId("t", "s")
    assert (await store.append(s, [sold(0), sold(1)], NO_STREAM)).last_sequence == 1
    with pytest.raises(WrongExpectedVersion) as caught:
        await store.append(s, [sold(2)], 0)
    assert caught.value.actual == 1
    with pytest.raises(WrongExpectedVersion):
        await store.append(s, [sold(2)], NO_STREAM)
    assert (await store.append(s, [sold(2)], STREAM_EXISTS)).last_sequence == 2
    assert (await store.append(s, [sold(3), sold(4)], 2)).first_sequence == 3
    await store.delete_stream(s)  # soft: reads empty, the sequences go on (its event is 5)
    with pytest.raises(WrongExpectedVersion) as caught:
        await store.append(s, [sold(6)], 5)
    assert caught.value.actual is None
    with pytest.raises(WrongExpectedVersion):
        await store.append(s, [sold(6)], STREAM_EXISTS)
    assert (await store.append(s, [sold(6)], NO_STREAM)).first_sequence == 6
    assert [e.sequence async for e in store.read_stream(s)] == [6]
    await store.delete_stream(s, hard=True)
    with pytest.raises(StreamDeleted):
        await store.append(s, [sold(7)])
    with pytest.raises(WrongExpectedVersion):
        await store.append(StreamId("t", "new"), [sold(0)], STREAM_EXISTS)
    with pytest.raises(WrongExpectedVersion):
        await store.append(StreamId("t", "new"), [sold(0)], 0)
    assert (await store.append(StreamId("t", "new"), [sold(0), sold(1)])).last_sequence == 1


async def test_python_and_the_functions_sort_lock_keys_alike(store: PostgresEventStore) -> None:
    """The order ``lock_arrays`` gives keys (Python's, by code point) is the order the stream
    functions take them in (``COLLATE "C"``, UTF-8 bytes), whatever the database's collation:
    one global order, no deadlocks between the two kinds of writers."""
    keys = [
        "y/b",
        "t/Zeta",
        "t/zeta",
        "*",
        "t/é",
        "t/e",
        "t/日本",
        "t/😀",
        "t/ÿ",
        "y/B",
        "t/10",
        "t/9",
    ]
    classes, ordered, modes = lock_arrays([(2, k, False) for k in keys] + [(1, "a/b/c", True)])
    assert classes[0] == 1 and ordered[0] == "a/b/c"
    assert ordered[1:] == sorted(keys) and not any(modes[1:])
    conn = await asyncpg.connect(split_url(store.url)[0])
    try:
        in_sql = await conn.fetchval(
            'SELECT array_agg(k ORDER BY k COLLATE "C") FROM unnest($1::text[]) AS k', keys
        )
    finally:
        await conn.close()
    assert in_sql == sorted(keys)


def test_each_key_is_locked_once_in_its_strongest_mode() -> None:
    """A key both shared (an event's tag) and exclusive (the condition's) is taken once,
    exclusive; classes come first in the order."""
    classes, keys, modes = lock_arrays(
        [(7, "t/a", False), (3, "s/x", True), (7, "t/a", True), (7, "*", False), (7, "*", False)]
    )
    assert (classes, keys, modes) == ([3, 7, 7], ["s/x", "*", "t/a"], [True, False, True])
