"""Forced races on a real PostgreSQL: out-of-order commits, rollbacks, one-stream contention."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import chronik
from chronik import ANY, NO_STREAM, EventData, RecordedEvent, StreamId
from chronik.store.postgres import PostgresEventStore
from chronik.store.postgres.schema import split_url
from chronik.store.postgres.write import append_call, now_us

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresEventStore]:
    """An open PostgreSQL store on a fresh schema."""
    s = chronik.open_store(postgres_url, pool_max_size=20)
    assert isinstance(s, PostgresEventStore)
    async with s:
        yield s


async def raw_conn(store: PostgresEventStore) -> asyncpg.Connection:
    """A connection of our own, outside the store's pool."""
    return await asyncpg.connect(split_url(store.url)[0])


async def begin_and_append(
    conn: asyncpg.Connection, store: PostgresEventStore, stream: StreamId, n: int
) -> tuple[int, Any]:
    """Open a transaction, take its id and append one event through the store's function."""
    tx = conn.transaction()
    await tx.start()
    xid = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
    req = store.prepare(stream, [EventData("held.event", {"n": n})], ANY)
    sql, args = append_call(store.statements, req, now_us())
    row = await conn.fetchrow(sql, *args)
    assert row[0] == 0
    return int(xid), tx


async def finish(tx: Any, commit: bool) -> None:
    """Commit or roll back the transaction opened by begin_and_append."""
    await (tx.commit() if commit else tx.rollback())


async def all_events(store: PostgresEventStore) -> list[RecordedEvent]:
    """read_all from the start."""
    return [e async for e in store.read_all()]


async def test_held_transaction_blocks_delivery_until_it_commits(
    store: PostgresEventStore,
) -> None:
    """Events committed after an open, earlier transaction wait for it; nothing is skipped."""
    conn = await raw_conn(store)
    try:
        xid, tx = await begin_and_append(conn, store, StreamId("held", "early"), 0)
        later = [
            await store.append(StreamId("held", f"l{i}"), [EventData("t", {"n": i + 1})])
            for i in range(3)
        ]
        assert all(r.position.commit > xid for r in later)
        assert await all_events(store) == []  # behind the horizon: not readable yet
        assert await store.head() is None  # "after the head" must not pass the open one
        lag = await store.horizon_lag()
        assert lag.pending_events == 3 and lag.head == later[-1].position
        assert lag.safe_head is None and lag.oldest_transaction_seconds is not None
        sub = store.subscribe()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(sub), 0.3)
        assert not sub.caught_up  # an earlier transaction may still commit
        await finish(tx, commit=True)
        got = [await asyncio.wait_for(anext(sub), 10) for _ in range(4)]
        assert [e.json()["n"] for e in got] == [0, 1, 2, 3]
        assert got[0].position.commit == xid
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(sub), 0.2)
        assert sub.caught_up
        assert got == await all_events(store)
        assert await store.head() == got[-1].position
        assert (await store.horizon_lag()).pending_events == 0
        await sub.close()
    finally:
        await conn.close()


async def test_rollback_hole_leaves_no_stall(store: PostgresEventStore) -> None:
    """A rolled-back early transaction leaves a hole; later events are delivered all the same."""
    conn = await raw_conn(store)
    try:
        _, tx = await begin_and_append(conn, store, StreamId("hole", "early"), 0)
        for i in range(3):
            await store.append(StreamId("hole", f"l{i}"), [EventData("t", {"n": i + 1})])
        sub = store.subscribe()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(sub), 0.2)
        await finish(tx, commit=False)  # no notification is sent for a rollback
        got = [await asyncio.wait_for(anext(sub), 10) for _ in range(3)]
        assert [e.json()["n"] for e in got] == [1, 2, 3]
        assert await store.stream_version(StreamId("hole", "early")) is None
        assert got == await all_events(store)
        await sub.close()
    finally:
        await conn.close()


async def test_random_commit_order_never_skips(store: PostgresEventStore) -> None:
    """Random commit/rollback order: each committed event is delivered once, in order."""
    rng = random.Random(5)
    sub = store.subscribe()
    delivered: list[RecordedEvent] = []
    committed: list[int] = []

    async def writer(k: int) -> None:
        conn = await raw_conn(store)
        try:
            for round_ in range(6):
                n = k * 100 + round_
                _, tx = await begin_and_append(conn, store, StreamId("rand", f"w{k}"), n)
                await asyncio.sleep(rng.random() * 0.02)
                commit = rng.random() < 0.8
                await finish(tx, commit)
                if commit:
                    committed.append(n)
        finally:
            await conn.close()

    async def consume() -> None:
        async for e in sub:
            delivered.append(e)
            if len(delivered) == len(committed) and done.is_set():
                return

    done = asyncio.Event()
    consumer = asyncio.create_task(consume())
    await asyncio.gather(*(writer(k) for k in range(8)))
    committed.append(-1)
    done.set()
    final = await store.append(StreamId("rand", "last"), [EventData("t", {"n": -1})])
    await asyncio.wait_for(consumer, 20)
    await sub.close()
    assert sorted(e.json()["n"] for e in delivered) == sorted(committed)
    positions = [e.position for e in delivered]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert delivered == await all_events(store)
    assert delivered[-1].position == final.position


async def test_sixteen_appenders_one_stream_one_winner_per_version(
    store: PostgresEventStore, postgres_url: str
) -> None:
    """16 concurrent appenders (two stores) to one stream: exactly one winner per version."""
    async with chronik.open_store(postgres_url, pool_max_size=8) as other:
        s = StreamId("race", "one")
        expected: chronik.Expected = NO_STREAM
        for round_ in range(15):
            calls = [
                (store if i % 2 else other).append(
                    s, [EventData("t", {"r": round_, "i": i})], expected
                )
                for i in range(16)
            ]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            wins = [o for o in outcomes if isinstance(o, chronik.AppendResult)]
            assert len(wins) == 1, outcomes
            losers = [o for o in outcomes if not isinstance(o, chronik.AppendResult)]
            assert all(isinstance(o, chronik.WrongExpectedVersion) for o in losers)
            assert wins[0].last_sequence == round_
            expected = round_
        events = [e async for e in store.read_stream(s)]
        assert [e.sequence for e in events] == list(range(15))
        assert [e.json()["r"] for e in events] == list(range(15))


async def test_any_expectation_appenders_all_win_in_order(store: PostgresEventStore) -> None:
    """16 concurrent ANY appenders to one stream all succeed with distinct, gapless sequences."""
    s = StreamId("race", "any")
    results = await asyncio.gather(
        *(store.append(s, [EventData("t", {"i": i}), EventData("t", {})], ANY) for i in range(16))
    )
    firsts = sorted(r.first_sequence for r in results)
    assert firsts == list(range(0, 32, 2))
    events = [e async for e in store.read_stream(s)]
    assert [e.sequence for e in events] == list(range(32))
    by_position = [e async for e in store.read_all()]
    assert [e.sequence for e in by_position] == list(range(32))


async def test_unique_violation_on_sequence_is_wrong_expected_version(
    store: PostgresEventStore,
) -> None:
    """A (stream, sequence) taken behind the store's back surfaces as WrongExpectedVersion."""
    s = StreamId("foreign", "f1")
    await store.append(s, [EventData("t", {})], NO_STREAM)
    conn = await raw_conn(store)
    try:
        sid = await conn.fetchval(f"SELECT id FROM {store._s}.streams WHERE aggregate_id = 'f1'")
        await conn.execute(
            f"INSERT INTO {store._s}.events (xid, stream_id, sequence, event_id, type, "
            "schema_version, payload, recorded_at) VALUES (pg_current_xact_id()::text::bigint, "
            "$1, 1, 'foreign-1', 't', 1, '\\x7b7d', 0)",
            sid,
        )
    finally:
        await conn.close()
    with pytest.raises(chronik.WrongExpectedVersion) as info:
        await store.append(s, [EventData("t", {})], ANY)
    assert info.value.stream == s and info.value.actual == 0


async def test_filtered_subscription_does_not_skip_a_held_transaction(
    store: PostgresEventStore,
) -> None:
    """A filtered subscriber skipping unwanted events never jumps past a held transaction."""
    for i in range(3):
        await store.append(StreamId("other", f"o{i}"), [EventData("t", {"n": -1})])
    conn = await raw_conn(store)
    try:
        _, tx = await begin_and_append(conn, store, StreamId("mine", "early"), 0)
        for i in range(3):
            await store.append(StreamId("other", f"p{i}"), [EventData("t", {"n": -2})])
        sub = store.subscribe(domains=["mine"])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(sub), 0.3)
        await finish(tx, commit=True)
        late = await store.append(StreamId("mine", "late"), [EventData("t", {"n": 1})])
        got = [await asyncio.wait_for(anext(sub), 10) for _ in range(2)]
        assert [e.json()["n"] for e in got] == [0, 1]
        assert got[1].position == late.position
        await sub.close()
    finally:
        await conn.close()
