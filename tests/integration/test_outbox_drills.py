"""Outbox drills on real brokers: outages while the outbox dispatches; each message takes effect
once at the consumer, in order per key, and nothing the outbox marked failed is published
behind its back. Run with -s to see the figures."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

import nats
import pytest

import chronik
from chronik.outbox import OutboxAdmin, OutboxDispatcher, record
from chronik.store.base import EventStore, UnitOfWork
from chronik.testing.services import Service
from chronik.testing.transport_conformance import eventually
from chronik.transports import Delivery, Message, StoreInbox, Transport, open_transport
from tests.conftest import SCALE

pytestmark = pytest.mark.drill
KEYS = 5


class FailedAttempts(logging.Handler):
    """Counts the outbox's failed publish attempts (its warnings) while attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "failed" in record.getMessage():
            self.count += 1


class Tally:
    """What a consumer saw: every delivery (broker duplicates included) and every effect
    (what passed the inbox), in arrival order."""

    def __init__(self, order: dict[str, tuple[str, int]]) -> None:
        self.order = order  # message id -> (key, index within its key)
        self.deliveries: list[str] = []
        self.effects: list[str] = []

    async def effect(self, delivery: Delivery, unit: UnitOfWork) -> None:
        self.effects.append(delivery.id)

    def inversions(self) -> int:
        """Effects that arrived after a later message of their key."""
        last: dict[str, int] = defaultdict(lambda: -1)
        count = 0
        for message_id in self.effects:
            key, index = self.order[message_id]
            if index < last[key]:
                count += 1
            last[key] = max(last[key], index)
        return count

    def figures(self) -> dict[str, int]:
        return {
            "delivered": len(set(self.effects)),
            "broker_duplicates": len(self.deliveries) - len(set(self.deliveries)),
            "inbox_duplicates": len(self.effects) - len(set(self.effects)),
            "inversions": self.inversions(),
        }


async def _record(store: EventStore, topic: str, start: int, count: int) -> list[Message]:
    out = []
    for n in range(start, start + count):
        m = Message(topic=topic, body=b"{}", id=f"drill-{n:04d}", key=f"k{n % KEYS}")
        async with store.transaction() as tx:
            record(tx, m)
        out.append(m)
    return out


async def _consume(
    transport: Transport, topic: str, consumer_store: EventStore, tally: Tally
) -> None:
    inbox = StoreInbox(consumer_store, "drill")
    handle = inbox.handler(tally.effect)

    async def seen(delivery: Delivery) -> None:
        tally.deliveries.append(delivery.id)
        await handle(delivery)

    await transport.subscribe(topic, "drill", seen, prefetch=16)


def _order(messages: list[Message]) -> dict[str, tuple[str, int]]:
    per_key: dict[str, int] = defaultdict(int)
    order = {}
    for m in messages:
        assert m.key is not None
        order[m.id] = (m.key, per_key[m.key])
        per_key[m.key] += 1
    return order


@pytest.mark.timeout(60)
async def test_nats_down_failed_messages_are_published_once_after_retry_in_order(
    tmp_path: Path, nats_url: str, nats_server: Service
) -> None:
    """NATS stops while the outbox dispatches: messages back off and go failed (their keys
    held); NATS comes back and nothing is published until the operator retries; then every
    message takes effect once, in order per key, and JetStream stored each exactly once."""
    topic = f"drill.nats.{os.urandom(3).hex()}"
    prefix = f"DRILL{os.urandom(3).hex().upper()}"
    url = f"{nats_url}?stream_prefix={prefix}&dedup_window=1"  # dedup can't hide a republish
    async with (
        chronik.open_store(f"sqlite:///{tmp_path}/events.db") as store,
        chronik.open_store(f"sqlite:///{tmp_path}/consumer.db") as consumer_store,
        open_transport(url) as consumer_side,
        open_transport(url) as producer,
    ):
        admin = OutboxAdmin(store)
        first = await _record(store, topic, 0, 20)
        later = [
            Message(topic=topic, body=b"{}", id=f"drill-{n:04d}", key=f"k{n % KEYS}")
            for n in range(20, 60)
        ]
        tally = Tally(_order(first + later))
        await _consume(consumer_side, topic, consumer_store, tally)
        dispatcher = OutboxDispatcher(
            store, producer, poll_interval=0.02, max_attempts=3, backoff=0.05, max_backoff=0.2
        )
        async with dispatcher:
            await eventually(lambda: len(tally.effects) == 20, within=15, what="first 20")
            await asyncio.sleep(0.3)  # their acks reach the server
            await asyncio.to_thread(nats_server._stop)  # type: ignore[attr-defined]
            down = time.monotonic()
            await _record(store, topic, 20, 40)
            for _ in range(500):
                status = await admin.status()
                if status.failed == KEYS and status.blocked == status.pending:
                    break
                await asyncio.sleep(0.02)
            assert (status.failed, status.blocked) == (KEYS, 40 - KEYS), status
            assert status.blocked_keys == [f"key k{k}" for k in range(KEYS)]
            faults = sum(r["attempts"] for r in await admin.messages("failed"))
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - down)))
            await asyncio.to_thread(nats_server._start)  # type: ignore[attr-defined]
            outage = time.monotonic() - down
            await asyncio.sleep(1.5)  # past the dedup window: a buffered publish would show
            assert len(tally.effects) == 20, "published behind the outbox's back"
            retried = time.monotonic()
            assert await admin.retry() == KEYS
            await eventually(lambda: len(set(tally.effects)) == 60, within=20, what="all 60")
            recover = time.monotonic() - retried
            await asyncio.sleep(0.3)
        nc = await nats.connect(nats_url)  # the stream's own count: each message stored once
        try:
            info = await nc.jetstream().stream_info(f"{prefix}_TOPICS")
        finally:
            await nc.close()
    figures = tally.figures()
    print(
        f"\nNATS drill: outage {outage:.1f}s, failed publish attempts {faults}, "
        f"stored by JetStream {info.state.last_seq}, {figures}, "
        f"recovered {recover:.2f}s after retry"
    )
    assert info.state.last_seq == 60
    assert figures == {
        "delivered": 60,
        "broker_duplicates": 0,
        "inbox_duplicates": 0,
        "inversions": 0,
    }


@pytest.mark.timeout(90 * SCALE)
async def test_rabbitmq_restart_under_publish_keeps_order_and_effects_once(
    tmp_path: Path, amqp_url: str, rabbitmq_server: Service
) -> None:
    """RabbitMQ restarts while the outbox publishes 300 messages over 5 keys: publishes fail
    and back off, the keys wait, and at the consumer every message takes effect once (inbox),
    with no inversion within a key."""
    topic = f"drill.amqp.{os.urandom(3).hex()}"
    total = 300 * SCALE
    async with (
        chronik.open_store(f"sqlite:///{tmp_path}/events.db") as store,
        chronik.open_store(f"sqlite:///{tmp_path}/consumer.db") as consumer_store,
        open_transport(amqp_url) as consumer_side,
        open_transport(amqp_url) as producer,
    ):
        messages = await _record(store, topic, 0, total)
        tally = Tally(_order(messages))
        await _consume(consumer_side, topic, consumer_store, tally)
        dispatcher = OutboxDispatcher(
            store,
            producer,
            batch_size=10,
            poll_interval=0.02,
            max_attempts=1000,
            backoff=0.05,
            max_backoff=0.5,
        )
        counter = FailedAttempts()
        logging.getLogger("chronik.outbox").addHandler(counter)
        try:
            async with dispatcher:
                await eventually(lambda: len(tally.effects) >= 40, within=20, what="first 40")
                started = time.monotonic()
                await asyncio.to_thread(rabbitmq_server.restart)
                await eventually(
                    lambda: len(set(tally.effects)) == total, within=60, what="all messages"
                )
                recover = time.monotonic() - started
                await asyncio.sleep(0.3)
        finally:
            logging.getLogger("chronik.outbox").removeHandler(counter)
        failures = counter.count
    figures = tally.figures()
    print(
        f"\nRabbitMQ drill: 1 broker restart, failed publish attempts {failures}, {figures}, "
        f"all delivered {recover:.1f}s after the restart began"
    )
    assert figures["delivered"] == total
    assert figures["inbox_duplicates"] == 0
    assert figures["inversions"] == 0
