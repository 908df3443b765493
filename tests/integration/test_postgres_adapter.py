"""The PostgreSQL adapter's own behaviour: URL options, migrations, tenants, NOTIFY, failures."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import asyncpg
import pytest
from typer.testing import CliRunner

import chronik
from chronik import EventData, RecordedEvent, StreamId
from chronik.cli import _build
from chronik.store.postgres import PostgresEventStore
from chronik.store.postgres.schema import SCHEMA_VERSION, split_url
from chronik.testing.services import free_port
from chronik.transports import open_transport

pytestmark = pytest.mark.timeout(90)


def pg(url: str, **options: object) -> PostgresEventStore:
    """The PostgreSQL store for ``url``."""
    store = chronik.open_store(url, **options)
    assert isinstance(store, PostgresEventStore)
    return store


async def retry_append(
    store: PostgresEventStore, stream: StreamId, events: list[EventData]
) -> chronik.AppendResult:
    """Append, retrying the same events while the store is unreachable (idempotent)."""
    for _ in range(200):
        try:
            return await store.append(stream, events)
        except chronik.StoreUnavailable:
            await asyncio.sleep(0.05)
    raise AssertionError("the store did not come back")


def test_db_migrate_and_init_report_schema_versions(postgres_url: str) -> None:
    """`chronik db migrate` creates the schema once; `db init` then finds it up to date."""
    runner = CliRunner()
    first = runner.invoke(_build(), ["db", "migrate", "--store", postgres_url])
    assert first.exit_code == 0 and f"migrated from version 0 to {SCHEMA_VERSION}" in first.output
    again = runner.invoke(_build(), ["db", "init", "--store", postgres_url])
    assert again.exit_code == 0 and "up to date" in again.output
    assert "password" not in again.output


async def test_migrate_false_needs_a_migrated_schema(postgres_url: str) -> None:
    """With ?migrate=false the store refuses an unmigrated schema and opens a migrated one."""
    with pytest.raises(chronik.ConfigurationError, match="chronik db migrate"):
        await pg(f"{postgres_url}&migrate=false").open()
    async with pg(postgres_url) as store:
        await store.append(StreamId("m", "1"), [EventData("t", {})])
    async with pg(f"{postgres_url}&migrate=false") as store:
        assert await store.stream_version(StreamId("m", "1")) == 0


def test_schema_names_are_validated() -> None:
    """A schema name that is not a plain identifier is refused before any SQL is built."""
    for bad in ("Bad", "a-b", 'x"; drop table y; --', "", "1abc"):
        with pytest.raises(chronik.ConfigurationError):
            pg(f"postgresql://u@127.0.0.1:1/db?schema={bad}")
    with pytest.raises(chronik.ConfigurationError):
        pg("postgresql://u@127.0.0.1:1/db?migrate=perhaps")


async def test_unreachable_server_is_store_unavailable() -> None:
    """Opening a store on a port nobody listens on raises StoreUnavailable, not a driver error."""
    store = pg(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    with pytest.raises(chronik.StoreUnavailable) as info:
        await store.open()
    assert isinstance(info.value.__cause__, OSError | asyncpg.PostgresError)


async def test_tenants_are_separate_streams(postgres_url: str) -> None:
    """The same domain and aggregate id in two tenants are two streams."""
    async with pg(postgres_url) as store:
        a, b = StreamId("order", "o1"), StreamId("order", "o1", "acme")
        await store.append(a, [EventData("t", {"n": 1})], chronik.NO_STREAM)
        await store.append(b, [EventData("t", {"n": 2})], chronik.NO_STREAM)
        assert await store.stream_version(a) == 0 and await store.stream_version(b) == 0
        got = [e.stream async for e in store.read_all()]
        assert got == [a, b]
        assert [i.stream async for i in store.list_streams()] == [a, b]


async def test_notify_wakes_another_store_instance(postgres_url: str) -> None:
    """An append through one store wakes the other store's waiters through LISTEN/NOTIFY."""
    async with pg(postgres_url) as a, pg(postgres_url) as b:
        for _ in range(100):
            if a.listening and b.listening:
                break
            await asyncio.sleep(0.02)
        assert a.listening
        changed = a.change_signal()
        await b.append(StreamId("n", "1"), [EventData("t", {})])
        await asyncio.wait_for(changed.wait(), 5)


async def test_kill_9_of_a_backend_mid_append(postgres_url: str) -> None:
    """kill -9 of a backend mid-append: outcome-unknown StoreUnavailable; a retry stores once."""
    async with pg(postgres_url) as store:
        s = StreamId("kill", "k1")
        await store.append(s, [EventData("t", {"n": 0})])
        blocker = await asyncpg.connect(split_url(postgres_url)[0])
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", store.lock_class, "/kill/k1"
        )
        events = [EventData("t", {"n": 1}), EventData("t", {"n": 2})]
        task = asyncio.create_task(store.append(s, events, 0))
        pid = None
        for _ in range(200):  # wait until the append waits on the stream lock
            pid = await blocker.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND wait_event = 'advisory' AND pid <> pg_backend_pid()"
            )
            if pid:
                break
            await asyncio.sleep(0.02)
        assert pid, "the append never reached the lock"
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(chronik.StoreUnavailable) as info:
            await asyncio.wait_for(task, 30)
        assert info.value.outcome_unknown
        blocker.terminate()
        first = await retry_append(store, s, events)  # crash recovery may still be running
        assert (first.first_sequence, first.last_sequence) == (1, 2)
        assert await store.append(s, events) == first
        assert [e.json()["n"] async for e in store.read_stream(s)] == [0, 1, 2]
        assert [e.json()["n"] async for e in store.read_all()] == [0, 1, 2]


async def test_subscription_survives_a_server_restart(
    postgres_url: str, postgres_restart: Callable[[], None]
) -> None:
    """A live subscription survives a server restart: reconnects, resumes, no duplicates."""
    async with pg(postgres_url, poll_interval=0.05) as store:
        got: list[RecordedEvent] = []
        sub = store.subscribe()

        async def consume() -> None:
            async for e in sub:
                got.append(e)

        consumer = asyncio.create_task(consume())
        s = StreamId("restart", "r1")
        for i in range(5):
            await store.append(s, [EventData("t", {"n": i})])
        for _ in range(500):
            if len(got) == 5:
                break
            await asyncio.sleep(0.01)
        assert len(got) == 5
        await asyncio.to_thread(postgres_restart)
        for i in range(5, 10):
            await retry_append(store, s, [EventData("t", {"n": i})])
        for _ in range(1000):
            if len(got) >= 10:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # room for a duplicate to show up, if there were one
        assert [e.json()["n"] for e in got] == list(range(10))
        assert got == [e async for e in store.read_all()]
        for _ in range(500):
            if store.listening:
                break
            await asyncio.sleep(0.01)
        assert store.listening
        await sub.close()
        await asyncio.wait_for(consumer, 5)


async def test_polling_delivers_while_listen_is_down(postgres_url: str) -> None:
    """With LISTEN down, a subscription still sees another store's appends (it polls)."""
    async with pg(postgres_url, poll_interval=0.05) as a, pg(postgres_url) as b:
        assert a._feed is not None
        await a._feed.stop()
        assert not a.listening
        async with a.subscribe() as sub:
            await b.append(StreamId("poll", "p1"), [EventData("t", {"n": 1})])
            first = await asyncio.wait_for(anext(sub), 5)
            await b.append(StreamId("poll", "p1"), [EventData("t", {"n": 2})])
            second = await asyncio.wait_for(anext(sub), 5)
        assert [first.json()["n"], second.json()["n"]] == [1, 2]


async def test_values_postgres_refuses_are_validation_errors(postgres_url: str) -> None:
    """A text value PostgreSQL refuses (NUL) is a ValidationError on write and read."""
    async with pg(postgres_url) as store:
        s = StreamId("nul", "n1")
        with pytest.raises(chronik.ValidationError):
            await store.append(s, [EventData("t", {}, event_id="bad\x00id")])
        with pytest.raises(chronik.ValidationError):
            await store.get_event("bad\x00id")
        assert await store.head() is None
        await store.append(s, [EventData("t", {})])
        assert await store.stream_version(s) == 0


async def test_transport_connections_carry_the_store_timeouts(postgres_url: str) -> None:
    """The PostgreSQL transport's pooled connections set the store's server-side timeouts:
    the defaults, or the ``*_timeout_ms`` URL options."""
    async with open_transport(postgres_url) as transport:
        rows = await transport.pool().fetch(
            "SELECT current_setting('lock_timeout'), "
            "current_setting('idle_in_transaction_session_timeout'), "
            "current_setting('statement_timeout')"
        )
        assert tuple(rows[0]) == ("5s", "30s", "30s")
    url = postgres_url + "&lock_timeout_ms=1234&statement_timeout_ms=0"
    async with open_transport(url) as transport:
        rows = await transport.pool().fetch(
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
        )
        assert tuple(rows[0]) == ("1234ms", "0")
