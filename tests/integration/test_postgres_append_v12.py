"""PostgreSQL schema 12: batches sent as scalars (up to SCALAR_BATCH events) or as arrays store
the same rows, a NO_STREAM append looks for its stream row before any update and still meets
every stream state, and a schema 11 store migrates with its streams appending on where they
were."""

from __future__ import annotations

import asyncpg
import pytest

import chronik
from chronik import NO_STREAM, EventData, Metadata, Query, StreamId, WrongExpectedVersion
from chronik.store.postgres import PostgresEventStore
from chronik.store.postgres import schema as pg_schema
from chronik.store.postgres.schema import quote_schema, split_url
from chronik.store.postgres.statements import SCALAR_BATCH, Statements, append_call
from chronik.store.postgres.write import now_us
from tests.integration.test_postgres_dcb import store

__all__ = ["store"]  # the fixture, shared with the DCB tests

pytestmark = pytest.mark.timeout(60)


def mixed(n: int, tagged: bool, uniform: bool = False) -> list[EventData]:
    """``n`` events of every shape a batch carries: JSON and bytes payloads (with their content
    type), with and without metadata, schema versions above 1, tags on some (``tagged``); or,
    ``uniform``, one type, schema version, metadata and content type for all (sent once)."""
    events = []
    meta: Metadata | None
    for k in range(n):
        if uniform:
            meta = Metadata(correlation_id="same")
            event = EventData("blob.put", bytes([k]), meta, schema_version=3, content_type="x/y")
        elif k % 3 == 1:
            event = EventData("blob.put", bytes([k, 0, 255]), content_type="application/x-raw")
        else:
            meta = Metadata(correlation_id=f"c{k}") if k % 2 else None
            event = EventData("item.added", {"k": k}, metadata=meta, schema_version=1 + k % 4)
        if tagged and k % 4 == 0:
            event.tags = [f"k:{k}", "batch:x"]
        events.append(event)
    return events


@pytest.mark.parametrize("size", [2, 10, SCALAR_BATCH, SCALAR_BATCH + 1])
@pytest.mark.parametrize(("tagged", "uniform"), [(False, False), (True, False), (True, True)])
async def test_a_batch_stores_every_field_through_either_call_form(
    store: PostgresEventStore, size: int, tagged: bool, uniform: bool
) -> None:
    """A batch on each side of SCALAR_BATCH, with and without tags, its fields varying or the
    same for all, reads back field for field in order, its tags indexed for queries and no tag
    stored for an untagged event."""
    stream = StreamId("batch", f"s{size}{tagged}{uniform}")
    events = mixed(size, tagged, uniform)
    result = await store.append(stream, events, NO_STREAM)
    assert (result.first_sequence, result.last_sequence) == (0, size - 1)
    stored = [e async for e in store.read_stream(stream)]
    assert [e.position for e in stored] == list(result.positions)
    for k, (sent, got) in enumerate(zip(events, stored, strict=True)):
        want = store.prepare(stream, [sent], NO_STREAM).events[0]
        assert got.sequence == k
        assert (got.event_id, got.type, got.schema_version) == (
            want.event_id,
            want.type,
            want.schema_version,
        )
        assert (got.payload, got.raw_metadata, got.content_type, got.tags) == (
            want.payload,
            want.metadata,
            want.content_type,
            want.tags,
        )
    found = [e.event_id async for e in store.read_query(Query.of(tags=["batch:x"]))]
    assert found == [e.event_id for e in events if e.tags]
    # the same batch again is a retry: its original result, nothing stored twice
    assert (await store.append(stream, events, NO_STREAM)).positions == result.positions


def test_a_batch_up_to_the_limit_sends_scalars_only() -> None:
    """Up to SCALAR_BATCH events, the only array argument is the tags (None when no event has
    any) and a field the same for all events is sent once; one more event sends arrays."""
    sql = Statements.for_schema("x")
    store = PostgresEventStore("postgresql://u@h/d")
    stream = StreamId("batch", "s")
    for size, tagged, uniform in ((2, False, False), (SCALAR_BATCH, True, False), (9, False, True)):
        req = store.prepare(stream, mixed(size, tagged, uniform), NO_STREAM)
        statement, args = append_call(sql, req, 0)
        arrays = [a for a in args if isinstance(a, list)]
        assert arrays == ([[" ".join(e.tags) or None for e in req.events]] if tagged else [])
        if uniform:  # ids and payloads one per event; type, version, metadata, content type once
            assert statement.count("array_fill(") == 4 and len(args) == 4 + 2 * size + 4 + 2
            assert args[-3] == "x/y" and args[-4] == req.events[0].metadata
        else:
            # ids, types, payloads and content types vary; the schema versions may not
            assert statement.count("ARRAY[$") >= 4 and len(args) >= 4 + 4 * size + 2
    req = store.prepare(stream, mixed(SCALAR_BATCH + 1, False), NO_STREAM)
    statement, args = append_call(sql, req, 0)
    assert statement == sql.append_many and len(args) == 12


async def test_a_schema_11_store_migrates_and_its_streams_append_on(postgres_url: str) -> None:
    """Streams written by schema 11's functions (one with events, one soft-deleted) take
    appends after migration 12 as before: NO_STREAM fails on the stream with events (its
    version reported), succeeds on the soft-deleted one (sequences go on) and on a new one."""
    dsn, options = split_url(postgres_url)
    schema = options["schema"]
    s = quote_schema(schema)
    live, gone = StreamId("m", "live"), StreamId("m", "gone")
    conn = await asyncpg.connect(dsn)
    try:
        old = {v: pg_schema.MIGRATIONS[v] for v in range(1, 12)}
        assert await pg_schema.migrate(conn, schema, old) == (0, 11)
        sql = Statements.for_schema(schema)
        writer = PostgresEventStore(postgres_url)
        for stream, n in ((live, 2), (gone, 3)):
            events = [EventData("m.e", {"n": k}) for k in range(n)]
            req = writer.prepare(stream, events, NO_STREAM)
            statement, args = append_call(sql, req, now_us())
            assert (await conn.fetchrow(statement, *args))[0] == 0
        # soft-deleted: it reads empty, its sequences go on from 3
        await conn.execute(
            f"UPDATE {s}.streams SET truncate_before = 3 WHERE aggregate_id = 'gone'"
        )
        async with chronik.open_store(postgres_url) as store:
            with pytest.raises(WrongExpectedVersion) as caught:
                await store.append(live, [EventData("m.e", {"n": 9})], NO_STREAM)
            assert caught.value.actual == 1
            again = await store.append(
                gone, [EventData("m.e", {}), EventData("m.e", {})], NO_STREAM
            )
            assert (again.first_sequence, again.last_sequence) == (3, 4)
            one = await store.append(gone, [EventData("m.e", {})], 4)
            fresh = await store.append(StreamId("m", "new"), [EventData("m.e", {})], NO_STREAM)
            assert fresh.last_sequence == 0 and fresh.position > one.position
            assert [e.sequence async for e in store.read_stream(gone)] == [3, 4, 5]
        latest = await conn.fetchval(f"SELECT max(version) FROM {s}.schema_migrations")
        assert latest == pg_schema.SCHEMA_VERSION == 12
    finally:
        await conn.close()
