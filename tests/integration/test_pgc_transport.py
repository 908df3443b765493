"""The PostgreSQL transport's wake-ups: a publish NOTIFYs after its commit, coalesced with the
others of the interval, and still wakes a consumer in another process at once; a transport
that only publishes does not LISTEN; a busy consumer claims batches."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from chronik.store.postgres.feed import NOTIFY_INTERVAL
from chronik.transports import Delivery, Message, open_transport
from chronik.transports.postgres import PostgresTransport

pytestmark = pytest.mark.timeout(60)
N = 200


async def listeners(dsn: str, channel: str) -> int:
    """How many sessions LISTEN on ``channel`` (their last statement)."""
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1", f'LISTEN "{channel}"'
        )
        return n
    finally:
        await conn.close()


async def test_publishes_notify_after_commit_coalesced(postgres_url: str) -> None:
    """A burst of publishes (64 in flight) sends at most one NOTIFY per NOTIFY_INTERVAL (plus
    the first), each naming the group's channel, not one per publish; every message is there."""
    dsn = postgres_url.split("?")[0]
    async with open_transport(postgres_url) as t:
        assert isinstance(t, PostgresTransport)
        await t.subscribe("pgc.burst", "g", lambda d: asyncio.sleep(0))
        heard: list[str] = []
        listener = await asyncpg.connect(dsn)
        await listener.add_listener(t.notify_channel, lambda *a: heard.append(a[3]))
        try:
            window = asyncio.Semaphore(64)

            async def one(n: int) -> None:
                async with window:
                    await t.publish(Message(topic="pgc.burst", body=b"%d" % n))

            start = time.monotonic()
            await asyncio.gather(*(one(n) for n in range(300)))
            elapsed = time.monotonic() - start
            await asyncio.sleep(0.3)  # the last NOTIFY
        finally:
            await listener.close()
        assert set(heard) == {"t:pgc.burst/g"}
        assert 1 <= len(heard) <= elapsed / NOTIFY_INTERVAL + 2 < 300


async def test_a_consumer_elsewhere_is_woken_by_each_publish(postgres_url: str) -> None:
    """Messages published one at a time, apart, reach a consumer of another transport within a
    fraction of its 1 s fallback poll: the NOTIFY after each commit wakes it."""
    async with open_transport(postgres_url) as consumer, open_transport(postgres_url) as producer:
        arrived: dict[bytes, float] = {}

        async def handle(d: Delivery) -> None:
            arrived[d.body] = time.monotonic()

        await consumer.subscribe("pgc.wake", "g", handle)
        await asyncio.sleep(0.3)  # its LISTEN connection is up
        delays = []
        for n in range(6):
            body = b"%d" % n
            sent = time.monotonic()
            await producer.publish(Message(topic="pgc.wake", body=body))
            while body not in arrived and time.monotonic() - sent < 5:
                await asyncio.sleep(0.005)
            delays.append(arrived[body] - sent)
            await asyncio.sleep(0.05)
        assert max(delays) < 0.5, delays


async def test_a_transport_that_only_publishes_does_not_listen(postgres_url: str) -> None:
    """No LISTEN session while a transport only publishes (no wake-up per NOTIFY to pay for);
    its first consumer starts one, which then wakes it."""
    dsn = postgres_url.split("?")[0]
    async with open_transport(postgres_url) as t:
        assert isinstance(t, PostgresTransport)
        await t.publish(Message(topic="pgc.quiet", body=b"x"))
        await asyncio.sleep(0.3)
        assert await listeners(dsn, t.notify_channel) == 0
        got = asyncio.Event()

        async def handle(d: Delivery) -> None:
            got.set()

        await t.subscribe("pgc.quiet", "g", handle)
        deadline = time.monotonic() + 5
        while await listeners(dsn, t.notify_channel) == 0:
            assert time.monotonic() < deadline, "no LISTEN after the first consumer"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        sent = time.monotonic()
        await t.publish(Message(topic="pgc.quiet", body=b"y"))
        await asyncio.wait_for(got.wait(), 0.5)
        assert time.monotonic() - sent < 0.5


async def test_a_busy_consumer_claims_batches(postgres_url: str) -> None:
    """While messages keep coming from another transport, a consumer claims several per claim
    (CLAIM_LINGER), not one per NOTIFY: a claim per message before, now well under, and every
    message handled."""
    claims = 0
    async with open_transport(postgres_url) as t, open_transport(postgres_url) as producer:
        assert isinstance(t, PostgresTransport)
        handled: list[bytes] = []
        done = asyncio.Event()

        async def handle(d: Delivery) -> None:
            handled.append(d.body)
            if len(handled) == N:
                done.set()

        await t.subscribe("pgc.busy", "g", handle)
        real = t._pool_execute

        async def counting(sql: str, *args: object, consumer: bool = False) -> object:
            nonlocal claims
            claims += "SKIP LOCKED" in sql
            return await real(sql, *args, consumer=consumer)

        t._pool_execute = counting  # type: ignore[method-assign]
        for n in range(N):  # a steady trickle: each publish alone, ~1 ms apart
            await producer.publish(Message(topic="pgc.busy", body=b"%d" % n))
            await asyncio.sleep(0.001)
        await asyncio.wait_for(done.wait(), 20)
    assert sorted(handled) == sorted(b"%d" % n for n in range(N))
    assert 0 < claims < N * 0.6
