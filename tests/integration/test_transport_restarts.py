"""Broker restarts mid-stream: consumers resume by themselves and lose no acked message."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from chronik.errors import TransportUnavailable
from chronik.testing.services import Service
from chronik.testing.transport_conformance import eventually
from chronik.transports import Delivery, Message, Transport, open_transport

N = 120


@pytest.fixture(params=["postgresql", "nats", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> tuple[str, Service]:
    """(URL, server) of each real broker of the session."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url"), request.getfixturevalue("postgres_server")
    if request.param == "nats":
        return request.getfixturevalue("nats_url"), request.getfixturevalue("nats_server")
    return request.getfixturevalue("amqp_url"), request.getfixturevalue("rabbitmq_server")


async def _publish(transport: Transport, send: Callable[..., object], m: Message) -> None:
    """Publish until the broker confirms, reusing the message id (outages are retried)."""
    for _ in range(600):
        try:
            await send(m)  # type: ignore[misc]
            return
        except TransportUnavailable:
            await asyncio.sleep(0.1)
    pytest.fail(f"{m.id} was never confirmed")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("pattern", ["publish", "send"])
async def test_restart_mid_stream_loses_nothing(broker: tuple[str, Service], pattern: str) -> None:
    """Half the messages before a broker restart, half after: the same consumers, never
    restarted, end up with every message the broker confirmed."""
    url, server = broker
    topic = f"restart.{pattern}.{os.urandom(3).hex()}"
    got: list[str] = []

    async def handle(d: Delivery) -> None:
        got.append(d.id)

    async with open_transport(url) as consumer_side, open_transport(url) as producer:
        if pattern == "publish":
            await consumer_side.subscribe(topic, "survivors", handle, prefetch=8)
            send = producer.publish
        else:
            await consumer_side.listen(topic, handle, prefetch=8)
            send = producer.send
        sent = [Message(topic=topic, body=b"x" * 100) for _ in range(N)]
        for m in sent[: N // 2]:
            await _publish(producer, send, m)
        await eventually(lambda: len(set(got)) >= N // 4, what="consumption before the restart")
        await asyncio.to_thread(server.restart)
        for m in sent[N // 2 :]:
            await _publish(producer, send, m)
        want = {m.id for m in sent}
        await eventually(lambda: set(got) >= want, within=90, what="every confirmed message")
