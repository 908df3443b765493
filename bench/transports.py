"""W11: message transports, publish-to-consume, beside each broker's raw client in the same run.

For PostgreSQL, NATS JetStream and RabbitMQ (servers started here, on free ports, in temp dirs;
PostgreSQL with its default durability): N messages of 1 KiB are published by a producer that
keeps WINDOW publishes in flight (each one confirmed: a commit, a JetStream PubAck, a publisher
confirm) while a consumer of a durable group handles and acks them. Throughput is N over the
time from the first publish to the last handled message; latency is per message, from the
start of its publish to its handler. The raw loop does the same with the bare client: asyncpg
(insert, a NOTIFY per 5 ms after the commits, claim with FOR UPDATE SKIP LOCKED, delete),
nats-py (JetStream publish with a message id, durable pull consumer, ack) and aio-pika (topic
exchange to a quorum queue, publisher confirms, manual ack).

One JSON line per figure: ``W11-<backend>`` (messages/s), ``W11-<backend>-p50`` and ``-p99``
(ms; ratio = raw / value). Run alone with ``python -m bench.transports [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from chronik.testing.services import (
    NatsService,
    PostgresService,
    RabbitMQService,
    Service,
    ServiceNotStarted,
)
from chronik.transports import Delivery, Message, open_transport

WINDOW = 64
SIZE = 1024
Result = tuple[float, list[float]]  # (messages/s, latencies in ms)


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def body() -> bytes:
    return struct.pack("d", time.perf_counter()) + b"x" * (SIZE - 8)


def latency_ms(data: bytes) -> float:
    return (time.perf_counter() - struct.unpack_from("d", data)[0]) * 1000


class Sink:
    """Counts handled messages and their latencies; ``done`` fires at ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.latencies: list[float] = []
        self.done = asyncio.Event()

    def handle(self, data: bytes) -> None:
        self.latencies.append(latency_ms(data))
        if len(self.latencies) >= self.n:
            self.done.set()


async def pump(n: int, publish: Callable[[int], Awaitable[Any]]) -> None:
    """Publish ``n`` messages with at most WINDOW unconfirmed at a time."""
    window = asyncio.Semaphore(WINDOW)

    async def one(i: int) -> None:
        try:
            await publish(i)
        finally:
            window.release()

    tasks = []
    for i in range(n):
        await window.acquire()
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


async def measure(n: int, sink: Sink, publish: Callable[[int], Awaitable[Any]]) -> Result:
    start = time.perf_counter()
    await pump(n, publish)
    await asyncio.wait_for(sink.done.wait(), 300)
    return n / (time.perf_counter() - start), sink.latencies


# --- chronik ---------------------------------------------------------------------------------


async def chronik_run(url: str, n: int) -> Result:
    topic = f"w11.c{os.urandom(4).hex()}"
    sink = Sink(n)

    async def handle(d: Delivery) -> None:
        sink.handle(d.body)

    async with open_transport(url) as consumer_side, open_transport(url) as producer:
        await consumer_side.subscribe(topic, "bench", handle)

        async def publish(i: int) -> None:
            await producer.publish(Message(topic=topic, body=body()))

        return await measure(n, sink, publish)


# --- raw clients -----------------------------------------------------------------------------


async def raw_nats(url: str, n: int) -> Result:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy

    tag = os.urandom(4).hex()
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=5)
    stream, subject = f"RAW_{tag}", f"raw.{tag}"
    await js.add_stream(
        name=stream, subjects=[subject], retention=RetentionPolicy.INTEREST, duplicate_window=120
    )
    await js.add_consumer(
        stream,
        ConsumerConfig(
            durable_name="bench",
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
            max_ack_pending=1000,
        ),
    )
    sub = await js.pull_subscribe_bind(durable="bench", stream=stream)
    sink = Sink(n)

    async def consume() -> None:
        while not sink.done.is_set():
            try:
                msgs = await sub.fetch(64, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                sink.handle(m.data)
                await m.ack()

    async def publish(i: int) -> None:
        await js.publish(subject, body(), headers={"Nats-Msg-Id": f"{tag}-{i}"})

    consumer = asyncio.create_task(consume())
    try:
        return await measure(n, sink, publish)
    finally:
        await consumer
        await js.delete_stream(stream)
        await nc.close()


async def raw_rabbitmq(url: str, n: int) -> Result:
    import aio_pika

    conn = await aio_pika.connect_robust(url)
    try:
        producer = await conn.channel(publisher_confirms=True)
        consumer = await conn.channel(publisher_confirms=False)
        await consumer.set_qos(prefetch_count=64)
        name = f"raw.{os.urandom(4).hex()}"
        exchange = await producer.declare_exchange(
            "raw.topics", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await consumer.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind("raw.topics", routing_key=name)
        sink = Sink(n)

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            sink.handle(msg.body)
            await msg.ack()

        tag = await queue.consume(on_message)

        async def publish(i: int) -> None:
            m = aio_pika.Message(
                body(), message_id=str(i), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await exchange.publish(m, name)

        result = await measure(n, sink, publish)
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
        return result
    finally:
        await conn.close()


async def raw_postgres(url: str, n: int) -> Result:
    import asyncpg

    table = f"raw_{os.urandom(4).hex()}"
    pool = await asyncpg.create_pool(url, min_size=2, max_size=10)
    listener = await asyncpg.connect(url)
    await pool.execute(
        f"CREATE TABLE {table} (id bigserial PRIMARY KEY, message_id text NOT NULL, "
        "topic text NOT NULL, body bytea NOT NULL, "
        "locked_until timestamptz NOT NULL DEFAULT '-infinity')"
    )
    # NOTIFY after the commit, at most one per 5 ms for every publish meanwhile (a NOTIFY
    # inside each insert's transaction makes those commits take turns in PostgreSQL)
    insert = f"INSERT INTO {table} (message_id, topic, body) VALUES ($1, 'w11', $2)"
    notifying: list[asyncio.Task[None]] = []  # the NOTIFY to come (empty: none planned)
    notifies: list[asyncio.Task[None]] = []

    async def notify() -> None:
        await asyncio.sleep(0.005)
        notifying.clear()  # publishes from now on need the next one
        await pool.execute(f"NOTIFY {table}, 'w11'")

    claim = (
        f"UPDATE {table} m SET locked_until = now() + interval '30 seconds' WHERE m.id IN ("
        f"SELECT id FROM {table} WHERE locked_until <= now() ORDER BY id LIMIT 256 "
        "FOR UPDATE SKIP LOCKED) RETURNING m.id, m.body"
    )
    sink = Sink(n)
    wake = asyncio.Event()
    await listener.add_listener(table, lambda *_: wake.set())

    async def consume() -> None:
        while not sink.done.is_set():
            wake.clear()
            rows = await pool.fetch(claim)
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1)
                continue
            for row in sorted(rows, key=lambda r: r[0]):
                sink.handle(row[1])
            await pool.execute(
                f"DELETE FROM {table} WHERE id = ANY($1::bigint[])", [r[0] for r in rows]
            )

    async def publish(i: int) -> None:
        await pool.execute(insert, str(i), body())
        if not notifying:
            notifying.append(asyncio.create_task(notify()))
            notifies.append(notifying[0])

    consumer = asyncio.create_task(consume())
    try:
        return await measure(n, sink, publish)
    finally:
        await consumer
        await asyncio.gather(*notifies)
        await pool.execute(f"DROP TABLE {table}")
        await listener.close()
        await pool.close()


# --- the workload ----------------------------------------------------------------------------


def emit(backend: str, mine: list[Result], raw: list[Result], n: int) -> None:
    def line(workload: str, unit: str, values: list[float], raws: list[float], rate: bool) -> None:
        value, base = statistics.median(values), statistics.median(raws)
        out = {
            "workload": workload,
            "backend": backend,
            "value": round(value, 2),
            "unit": unit,
            "raw": round(base, 2),
            "ratio": round(value / base if rate else base / value, 3),
            "runs": [round(v, 2) for v in values],
            "raw_runs": [round(v, 2) for v in raws],
            "note": f"{n} messages of {SIZE} B, {WINDOW} publishes in flight, one consumer",
        }
        print(json.dumps(out), flush=True)

    def pct(runs: list[Result], q: int) -> list[float]:
        return [statistics.quantiles(lat, n=100)[q - 1] for _, lat in runs]

    line(f"W11-{backend}", "messages/s", [r for r, _ in mine], [r for r, _ in raw], True)
    line(f"W11-{backend}-p50", "ms", pct(mine, 50), pct(raw, 50), False)
    line(f"W11-{backend}-p99", "ms", pct(mine, 99), pct(raw, 99), False)


BACKENDS: dict[str, tuple[Callable[[], Service], Callable[[str, int], Awaitable[Result]]]] = {
    "postgres": (PostgresService, raw_postgres),
    "nats": (NatsService, raw_nats),
    "rabbitmq": (RabbitMQService, raw_rabbitmq),
}


def service_url(service: Service) -> str:
    url: str = service.url()  # type: ignore[attr-defined]
    return url


def run(runs: int, quick: bool, only: set[str] | None = None) -> None:
    """W11 for every backend (or those in ``only``); a broker that cannot start is skipped."""
    n = 1_000 if quick else 10_000
    for backend, (make, raw) in BACKENDS.items():
        if only and backend not in only:
            continue
        log(f"W11 {backend} ...")
        service = make()
        try:
            service.start()
        except ServiceNotStarted as exc:
            log(f"W11 {backend} skipped: {exc}")
            service.stop()
            continue
        try:
            url = service_url(service)
            asyncio.run(chronik_run(url, min(n, 200)))  # warm up both paths
            asyncio.run(raw(url, min(n, 200)))
            mine: list[Result] = []
            theirs: list[Result] = []
            for _ in range(runs):
                theirs.append(asyncio.run(raw(url, n)))
                mine.append(asyncio.run(chronik_run(url, n)))
            emit(backend, mine, theirs, n)
        finally:
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transports")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="postgres,nats,rabbitmq")
    args = parser.parse_args()
    run(args.runs, args.quick, set(args.only.split(",")))


if __name__ == "__main__":
    main()
