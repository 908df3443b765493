"""The transport conformance suite against memory and real PostgreSQL, NATS and RabbitMQ."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chronik.testing.transport_conformance import TransportConformance, TransportFactory
from chronik.testing.transport_dead_letters import TransportDeadLetterConformance
from chronik.testing.transport_key_order import TransportKeyOrderConformance
from chronik.testing.transport_kit import fresh_name
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


class _KeyOrder(TransportKeyOrderConformance):
    """The per-key order suite with fresh topic names; subclasses give ``make_transport``."""

    @pytest.fixture
    def name(self) -> str:
        """A topic name no other test uses."""
        return fresh_name()


class TestMemoryKeyOrder(_KeyOrder):
    """memory:// keeps per-key order across competing consumers."""

    @pytest.fixture
    async def make_transport(self) -> AsyncIterator[TransportFactory]:
        async for make in _factory(f"memory://key-order-{next(_brokers)}")():
            yield make


class TestPostgresKeyOrder(_KeyOrder):
    """postgresql:// keeps per-key order across competing consumers."""

    @pytest.fixture
    async def make_transport(self, postgres_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(postgres_url)():
            yield make


class TestNatsKeyOrder(_KeyOrder):
    """nats:// keeps per-key order across competing consumers (partitions)."""

    @pytest.fixture
    async def make_transport(self, nats_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(nats_url)():
            yield make


class TestRabbitMQKeyOrder(_KeyOrder):
    """amqp:// keeps per-key order across competing consumers (single-active partitions)."""

    @pytest.fixture
    async def make_transport(self, amqp_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(amqp_url)():
            yield make


class TestKafkaTransport(TransportConformance):
    """kafka:// (aiokafka on a Tansu broker) meets the transport semantics."""

    @pytest.fixture
    async def make_transport(self, kafka_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(kafka_url)():
            yield make


class TestKafkaKeyOrder(_KeyOrder):
    """kafka:// keeps per-key order across competing consumers (partition assignment)."""

    @pytest.fixture
    async def make_transport(self, kafka_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(kafka_url)():
            yield make


class TestKafkaDeadLetters(TransportDeadLetterConformance):
    """kafka:// dead letters: read by offset, settled by markers in a topic beside them."""

    @pytest.fixture
    async def make_transport(self, kafka_url: str) -> AsyncIterator[TransportFactory]:
        async for make in _factory(kafka_url)():
            yield make
