"""Reads from a real PostgreSQL hot standby: the standby store, rw:// read-your-writes, lag.

Every test opens its stores on a fresh schema of the session's primary; the standby store
waits for that schema to be replayed (a standby cannot migrate).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import chronik
from chronik import EventData, StreamId
from chronik.projections import Projection, ProjectionProcessor, ReadModel, Table, query
from chronik.store import ReadWriteStore, open_store
from chronik.store.base import EventStore
from chronik.store.composite_urls import rw_url
from chronik.store.postgres import PostgresEventStore
from chronik.testing.conformance_reads import ReadConformance
from chronik.testing.replica import PostgresReplica
from chronik.testing.services import PostgresService

_fresh = itertools.count(1)


def _urls(primary: PostgresService, standby: PostgresReplica) -> tuple[str, str]:
    schema = f"rw{next(_fresh)}"
    return primary.url("postgres", schema=schema), standby.url("postgres", schema=schema)


async def _split(
    primary: PostgresService, standby: PostgresReplica, **options: Any
) -> ReadWriteStore:
    """An opened rw store: the primary writes (and migrates), the standby reads."""
    write_url, read_url = _urls(primary, standby)
    writer = await open_store(write_url).open()
    store = ReadWriteStore(writer, [open_store(read_url)], **options)
    return await store.open()


class TestReadsOnTheStandby(ReadConformance):
    """The read conformance suite through rw (reads="all"): every read the standby serves,
    never stale, never falling back to the primary."""

    @pytest.fixture
    async def store(
        self, postgres_server: PostgresService, postgres_replica: PostgresReplica
    ) -> AsyncIterator[EventStore]:
        store = await _split(postgres_server, postgres_replica, reads="all", max_lag=30)
        yield store
        assert store.fallbacks == 0  # the standby caught up every time: no read left it
        await store.close()


async def test_the_standby_store_reads_and_refuses_every_write(
    postgres_server: PostgresService, postgres_replica: PostgresReplica
) -> None:
    """A postgresql:// store on a standby knows it, reads, and raises StoreReadOnly on writes."""
    write_url, read_url = _urls(postgres_server, postgres_replica)
    s = StreamId("acc", "a1")
    async with open_store(write_url) as primary, open_store(read_url) as standby:
        assert isinstance(standby, PostgresEventStore) and standby.standby
        assert not primary.standby  # type: ignore[attr-defined]
        r = await primary.append(s, [EventData("opened", {"n": 1})])
        await postgres_replica.wait_caught_up()
        assert [e.event_id async for e in standby.read_stream(s)] == [
            e.event_id async for e in primary.read_stream(s)
        ]
        assert await standby.head() == r.position
        assert standby.health.ok and "standby" in standby.health.detail
        lag = await standby.replay_lag()
        assert lag is not None and not lag.paused
        attempts = [
            standby.append(s, [EventData("opened", {})]),
            standby.save_checkpoint("p", r.position),
            standby.acquire_lease("p", "me", 10),
            standby.save_snapshot(chronik.Snapshot(s, 0, "acc", 1, b"{}")),
        ]
        for attempt in attempts:
            with pytest.raises(chronik.StoreReadOnly, match=str(postgres_replica.port)):
                await attempt
        assert await primary.stream_version(s) == 0
    missing = postgres_replica.url("postgres", schema=f"never{next(_fresh)}")
    with pytest.raises(chronik.ConfigurationError, match="migrate the primary"):
        await open_store(missing, standby_wait=0.2).open()


async def test_the_safe_horizon_holds_on_the_standby(
    postgres_server: PostgresService, postgres_replica: PostgresReplica
) -> None:
    """A transaction left open on the primary holds later commits back on the standby too; a
    subscription on the standby then delivers both in (xid, id) order, skipping nothing."""
    write_url, read_url = _urls(postgres_server, postgres_replica)
    schema = write_url.rsplit("=", 1)[1]
    async with open_store(write_url) as primary, open_store(read_url) as standby:
        await primary.append(StreamId("acc", "first"), [EventData("opened", {})])
        held = await asyncpg.connect(postgres_server.url("postgres"))
        try:
            tx = held.transaction()
            await tx.start()
            sid = await held.fetchval(
                f"INSERT INTO {schema}.streams (tenant, domain, aggregate_id, version) "
                "VALUES ('', 'acc', 'held', 0) RETURNING id"
            )
            await held.execute(
                f"INSERT INTO {schema}.events (xid, stream_id, sequence, event_id, type, "
                "schema_version, payload, recorded_at) VALUES "
                "(pg_current_xact_id()::text::bigint, $1, 0, $2, 'opened', 1, '{}', 0)",
                sid,
                str(uuid.uuid4()),
            )
            later = await primary.append(StreamId("acc", "later"), [EventData("opened", {})])
            await postgres_replica.wait_caught_up()
            # replayed (a stream read sees it), yet held back from the log: older xid running
            assert await standby.stream_version(StreamId("acc", "later")) == 0
            assert [e.stream.aggregate_id async for e in standby.read_all()] == ["first"]
            head = await standby.head()
            assert head is not None and head < later.position
            assert not await standby.settled(head)
            sub = standby.subscribe(after=head)
            got: list[str] = []

            async def follow() -> None:
                async for e in sub:
                    got.append(e.stream.aggregate_id)
                    if len(got) == 2:
                        return

            task = asyncio.create_task(follow())
            await asyncio.sleep(0.3)
            assert got == []
            await tx.commit()
        finally:
            await held.close()
        async with asyncio.timeout(10):
            await task
        assert got == ["held", "later"]


async def test_read_your_writes_after_every_append(
    postgres_server: PostgresService, postgres_replica: PostgresReplica
) -> None:
    """Each append is seen by the next read through the standby, and by another rw store
    that was told the position (observe / reading_after); nothing falls back."""
    store = await _split(postgres_server, postgres_replica, reads="all", max_lag=30)
    other = ReadWriteStore(
        await open_store(store.writer.url).open(), [open_store(store.readers[0].url)]
    )
    async with store, other:
        for i in range(40):
            s = StreamId("acc", f"a{i % 5}")
            r = await store.append(s, [EventData("added", {"i": i})])
            assert await store.stream_version(s) == r.last_sequence
            assert [e.json()["i"] async for e in store.read_stream(s)][-1] == i
            assert (await store.head()) == r.position
            with other.reading_after(r.position):
                assert await other.stream_version(s) == r.last_sequence
            if i % 10 == 9:
                other.observe(r.position)
                assert [e.position async for e in other.read_all(after=r.position)] == []
                assert (await other.head()) == r.position
        assert store.fallbacks == 0 and other.fallbacks == 0
        assert store.written == r.position


async def test_a_paused_standby_makes_reads_fall_back_to_the_primary(
    postgres_server: PostgresService, postgres_replica: PostgresReplica
) -> None:
    """With replay paused, a read that must see a write waits max_lag, then reads the
    primary and counts it; health and replication() tell; resumed, reads go back."""
    store = await _split(postgres_server, postgres_replica, max_lag=0.3)
    s = StreamId("acc", "lag")
    async with store:
        await store.append(s, [EventData("added", {"i": 0})])
        await postgres_replica.pause_replay()
        try:
            r = await store.append(s, [EventData("added", {"i": 1})])
            started = asyncio.get_running_loop().time()
            assert await store.head() == r.position  # from the primary, after max_lag
            assert asyncio.get_running_loop().time() - started >= 0.3
            assert store.fallbacks == 1
            assert "fell back" in store.health.detail and store.health.ok
            (status,) = await store.replication()
            assert status.behind is True and not status.down
            assert await store.readers[0].head() < r.position  # the standby is behind
            lag = await store.readers[0].replay_lag()  # type: ignore[attr-defined]
            assert lag.paused
        finally:
            await postgres_replica.resume_replay()
        await postgres_replica.wait_caught_up()
        await asyncio.sleep(0.35)  # the stale window after a fallback ends
        assert await store.head() == r.position
        assert store.fallbacks == 1
        (status,) = await store.replication()
        assert status.behind is False


async def test_subscriptions_and_projections_catch_up_from_the_standby(
    postgres_server: PostgresService, postgres_replica: PostgresReplica
) -> None:
    """A subscription on rw follows the standby (woken by its replay, held by a pause), and a
    projection reads the standby while its checkpoint and table go to the primary."""
    totals = Table("totals", {"id": str, "n": int}, primary_key="id")
    p = Projection("totals", tables=[totals], batch_size=4)

    @p.on("added")
    async def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("totals", id=e.stream.aggregate_id)
        rm.upsert("totals", id=e.stream.aggregate_id, n=(row["n"] if row else 0) + 1)

    url = rw_url(*_urls(postgres_server, postgres_replica), max_lag=10)
    async with open_store(url) as store:
        assert isinstance(store, ReadWriteStore)
        direct = store.writer  # writes it does not see: no read-your-writes floor
        got: list[int] = []

        async def follow() -> None:
            async for e in store.subscribe():
                got.append(e.json()["i"])
                if len(got) == 3:
                    return

        task = asyncio.create_task(follow())
        await direct.append(StreamId("acc", "x"), [EventData("added", {"i": 0})])
        async with asyncio.timeout(10):
            while not got:
                await asyncio.sleep(0.01)
        await postgres_replica.pause_replay()
        try:
            await direct.append(StreamId("acc", "x"), [EventData("added", {"i": 1})])
            await asyncio.sleep(0.3)
            assert got == [0]  # the primary has it, the paused standby not yet
        finally:
            await postgres_replica.resume_replay()
        await direct.append(StreamId("acc", "y"), [EventData("added", {"i": 2})])
        async with asyncio.timeout(10):
            await task
        assert got == [0, 1, 2]
        async with ProjectionProcessor(store, p, heartbeat=0.05) as proc:
            for i in range(10):
                r = await store.append(StreamId("acc", f"z{i % 2}"), [EventData("added", {})])
            async with asyncio.timeout(10):
                await proc.wait_for(r.position)
        rows = await query(store.writer, "totals", "totals", order_by=("id",))
        assert [(row["id"], row["n"]) for row in rows] == [("x", 2), ("y", 1), ("z0", 5), ("z1", 5)]
        checkpoint = await store.writer.load_checkpoint("projection:totals:g1")
        assert checkpoint is not None and checkpoint.position == r.position
        assert store.fallbacks == 0


async def test_an_app_runs_on_an_rw_url(
    postgres_server: PostgresService, postgres_replica: PostgresReplica
) -> None:
    """Chronik(store="rw://...") (as `chronik serve --store` builds it) writes and reads."""
    url = rw_url(*_urls(postgres_server, postgres_replica), max_lag=10)
    async with chronik.Chronik(store=url) as app:
        assert isinstance(app.store, ReadWriteStore)
        r = await app.store.append(StreamId("acc", "app"), [EventData("added", {})])
        assert [e.position async for e in app.store.read_all()] == [r.position]
    with pytest.raises(chronik.ConfigurationError, match="read="):
        open_store("rw://?write=memory%3A%2F%2F")
    with pytest.raises(chronik.ConfigurationError, match="max_lag"):
        ReadWriteStore(open_store("memory://"), [open_store("memory://")], max_lag=-1)


async def test_an_unreachable_standby_sends_reads_to_the_primary(
    postgres_server: PostgresService,
) -> None:
    """A reader that cannot be reached does not stop the store: reads go to the primary,
    counted as fallbacks, and replication() shows the reader down."""
    from chronik.testing.service_base import free_port

    write_url = postgres_server.url("postgres", schema=f"rw{next(_fresh)}")
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?schema=x"
    async with open_store(rw_url(write_url, dead, max_lag=0.2)) as store:
        assert isinstance(store, ReadWriteStore)
        r = await store.append(StreamId("acc", "a"), [EventData("added", {})])
        assert [e.position async for e in store.read_all()] == [r.position]
        assert store.fallbacks >= 1 and "no reader is up" in store.health.detail
        (status,) = await store.replication()
        assert status.down and status.head is None
