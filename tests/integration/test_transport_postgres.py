"""PostgreSQL transport specifics: the in-transaction inbox, options, URL selection."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

import chronik
from chronik.store.base import UnitOfWork
from chronik.testing.transport_conformance import Recorder, eventually
from chronik.transports import (
    Delivery,
    FailurePolicy,
    MemoryInbox,
    Message,
    StoreInbox,
    open_transport,
)
from chronik.transports.memory import MemoryTransport
from chronik.transports.postgres import PostgresInbox, PostgresTransport


async def test_inbox_commits_effect_and_id_together(postgres_url: str) -> None:
    """PostgresInbox: a redelivered id does nothing; a failed handler rolls back its effect
    and its inbox row, so the retry applies the effect exactly once."""
    url = postgres_url + "&dedup_window=0"  # the broker keeps duplicates: the inbox must cope
    async with open_transport(url) as transport:
        assert isinstance(transport, PostgresTransport)
        schema = transport.schema
        await transport.pool().execute(
            f'CREATE TABLE "{schema}".totals (id text PRIMARY KEY, n int NOT NULL)'
        )
        inbox = PostgresInbox(transport, "totals")
        failed: list[str] = []

        async def add(d: Delivery, conn: asyncpg.Connection) -> None:
            await conn.execute(
                f'INSERT INTO "{schema}".totals VALUES ($1, 1) '
                "ON CONFLICT (id) DO UPDATE SET n = totals.n + 1",
                d.key,
            )
            if d.body == b"fail-once" and d.id not in failed:
                failed.append(d.id)
                raise RuntimeError("after the write")

        got = Recorder()
        handler = inbox.handler(add)

        async def both(d: Delivery) -> None:
            await got(d)
            await handler(d)

        policy = FailurePolicy(retries=3, backoff=0.01)
        await transport.listen("inbox.test", both, policy=policy)
        once = Message(topic="inbox.test", body=b"ok", key="a")
        flaky = Message(topic="inbox.test", body=b"fail-once", key="b")
        for m in (once, once, flaky):
            await transport.send(m)
        await eventually(lambda: len(got.got) >= 4, what="four deliveries")

        async def totals() -> list[tuple[Any, ...]]:
            sql = f'SELECT id, n FROM "{schema}".totals ORDER BY id'
            return [tuple(r) for r in await transport.pool().fetch(sql)]

        # the fourth delivery's handler may still be committing when the recorder has it
        async with asyncio.timeout(10):
            while await totals() != [("a", 1), ("b", 1)] or inbox.skipped != 1:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # and it stays so: no effect applied twice
        assert await totals() == [("a", 1), ("b", 1)] and len(got.got) == 4


async def test_memory_inbox_skips_seen_ids() -> None:
    """MemoryInbox runs the handler once per message id."""
    calls: list[str] = []

    async def effect(d: Delivery, _: None) -> None:
        calls.append(d.id)

    handle = MemoryInbox("once").handler(effect)
    d = Delivery(Message(topic="t", body=b""), 1, "")
    await handle(d)
    await handle(d)
    assert calls == [d.id]


async def test_open_transport_picks_the_adapter_by_url() -> None:
    """open_transport maps schemes to adapters and refuses unknown ones with a clear error."""
    assert isinstance(open_transport("memory://"), MemoryTransport)
    assert type(open_transport("postgresql://u@h/db")).__name__ == "PostgresTransport"
    assert type(open_transport("nats://127.0.0.1:4222")).__name__ == "NatsTransport"
    assert type(open_transport("amqp://g:g@h/")).__name__ == "RabbitMQTransport"
    assert type(open_transport("kafka://127.0.0.1:9092")).__name__ == "KafkaTransport"
    for bad in ("mqtt://h", "no-scheme", "memory://x/y", "nats://h?bogus=1"):
        with pytest.raises(chronik.ConfigurationError):
            open_transport(bad)
    assert "g:***@" in repr(open_transport("amqp://g:secret@h/"))


async def test_unreachable_broker_is_a_typed_error() -> None:
    """A broker that does not answer raises TransportUnavailable from open, not a driver error."""
    from chronik.testing.services import free_port

    port = free_port()
    for url in (f"postgresql://u@127.0.0.1:{port}/db", f"amqp://g:g@127.0.0.1:{port}/"):
        with pytest.raises(chronik.TransportUnavailable):
            await asyncio.wait_for(open_transport(url).open(), 30)


def test_failure_policy_backoff_grows_to_its_ceiling() -> None:
    """FailurePolicy.delay doubles from backoff up to backoff_max."""
    p = FailurePolicy(backoff=0.1, backoff_max=0.5)
    assert [p.delay(a) for a in (1, 2, 3, 4, 10)] == [0.1, 0.2, 0.4, 0.5, 0.5]


async def test_concurrent_opens_create_the_schema_once(postgres_url: str) -> None:
    """Several transports opening a fresh schema at once all succeed (creation is locked)."""
    transports = [open_transport(postgres_url) for _ in range(4)]
    await asyncio.gather(*(t.open() for t in transports))
    for t in transports:
        await t.close()


async def test_first_uses_at_once_connect_once() -> None:
    """Concurrent first publishes on an unopened transport open it once; bad options are a
    ConfigurationError."""
    transport = open_transport("memory://")
    await asyncio.gather(*(transport.publish(Message(topic="t", body=b"")) for _ in range(5)))
    assert repr(transport).endswith("open>")
    await transport.close()
    with pytest.raises(chronik.ConfigurationError):
        open_transport("memory://", max_body_bytes=0)


async def test_store_inbox_on_a_postgres_store(postgres_url: str) -> None:
    """StoreInbox on a PostgreSQL event store: the event appended by the handler and the inbox
    row commit together, and a second delivery of the id appends nothing."""
    async with chronik.open_store(postgres_url) as store:
        inbox = StoreInbox(store, "ledger")
        stream = chronik.StreamId("ledger", "l-1")

        async def record(d: Delivery, unit: UnitOfWork) -> None:
            unit.append(stream, [chronik.EventData("ledger.credited", {"id": d.id})])

        handle = inbox.handler(record)
        delivery = Delivery(Message(topic="ledger.in", body=b"1"), 1, "ledger")
        await handle(delivery)
        await handle(delivery)
        assert [e.type async for e in store.read_stream(stream)] == ["ledger.credited"]
        assert await inbox.processed(delivery.id) and inbox.skipped == 1
