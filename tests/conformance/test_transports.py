"""The transport conformance suite against memory and real PostgreSQL, NATS and RabbitMQ."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chronik.testing.transport_conformance import TransportConformance, TransportFactory
from chronik.testing.transport_dead_letters import TransportDeadLetterConformance
from chronik.transports import Transport, open_transport

_brokers = itertools.count()


def _factory(url: str) -> Any:
    async def fixture() -> AsyncIterator[TransportFactory]:
        made: list[Transport] = []

        async def make(**options: Any) -> Transport:
            transport = await open_transport(url, **options).open()
            made.append(transport)
            return transport

        yield make
        for transport in made:
            await transport.close()

    return fixture


class TestMemoryTransport(TransportConformance):
    """memory://name meets the transport semantics (a fresh named broker per test)."""

    @pytest.fixture
    async def make_transport(self) -> AsyncIterator[TransportFactory]:
        async for make in _factory(f"memory://conformance-{next(_brokers)}")():
            yield make


class TestPostgresTransport(TransportConformance):
    """postgresql:// meets the transport semantics (a fresh schema per test)."""

    @pytest.fixture
    async def make_transport(self, postgres_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(postgres_url)():
            yield make


class TestNatsTransport(TransportConformance):
    """nats:// (JetStream) meets the transport semantics."""

    @pytest.fixture
    async def make_transport(self, nats_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(nats_url)():
            yield make


class TestRabbitMQTransport(TransportConformance):
    """amqp:// (RabbitMQ quorum queues) meets the transport semantics."""

    @pytest.fixture
    async def make_transport(self, amqp_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(amqp_url)():
            yield make


class TestMemoryDeadLetters(TransportDeadLetterConformance):
    """memory:// dead letters: list, inspect, retry to one group, drop."""

    @pytest.fixture
    async def make_transport(self) -> AsyncIterator[TransportFactory]:
        async for make in _factory(f"memory://dead-letters-{next(_brokers)}")():
            yield make


class TestPostgresDeadLetters(TransportDeadLetterConformance):
    """postgresql:// dead letters: rows of the dead-letter queue's channel."""

    @pytest.fixture
    async def make_transport(self, postgres_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(postgres_url)():
            yield make


class TestNatsDeadLetters(TransportDeadLetterConformance):
    """nats:// dead letters: read and deleted by stream sequence."""

    @pytest.fixture
    async def make_transport(self, nats_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(nats_url)():
            yield make


class TestRabbitMQDeadLetters(TransportDeadLetterConformance):
    """amqp:// dead letters: borrowed from the quorum queue and given back (no peek)."""

    @pytest.fixture
    async def make_transport(self, amqp_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(amqp_url)():
            yield make
