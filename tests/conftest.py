"""Shared fixtures: real servers (PostgreSQL, NATS, RabbitMQ) started once per session on a
free port.

A service that cannot start skips the tests that need it, unless CHRONIK_REQUIRE_SERVICES=1,
which turns that into a failure.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from chronik.testing.services import (
    NatsService,
    PostgresService,
    RabbitMQService,
    Service,
    ServiceUnavailable,
    unavailable,
)

_schemas = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresService]:
    """A PostgreSQL 15 cluster for the whole session (fsync off: tests, not benchmarks)."""
    service = PostgresService(durable=False)
    try:
        service.start()
    except ServiceUnavailable as exc:
        service.stop()
        unavailable(f"PostgreSQL unavailable: {exc}")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresService) -> str:
    """A store URL on its own, fresh schema (created by the store's migrations on open)."""
    if not postgres_server.running:
        postgres_server.start()
    return postgres_server.url("postgres", schema=f"t{next(_schemas)}")


@pytest.fixture
def postgres_restart(postgres_server: PostgresService) -> Callable[[], None]:
    """Restart the session's PostgreSQL server (same port, same data)."""
    return postgres_server.restart


def _session_service(service: Service, what: str) -> Iterator[Service]:
    try:
        service.start()
    except ServiceUnavailable as exc:
        service.stop()
        unavailable(f"{what} unavailable: {exc}")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsService]:
    """A ``nats-server -js`` for the whole session (tests use fresh stream subjects)."""
    service = NatsService()
    for _ in _session_service(service, "NATS"):
        yield service


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsService) -> str:
    """The session's NATS URL."""
    if not nats_server.running:
        nats_server.start()
    return nats_server.url()


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQService]:
    """A RabbitMQ node of our own for the whole session (tests use fresh queue names)."""
    service = RabbitMQService()
    for _ in _session_service(service, "RabbitMQ"):
        yield service


@pytest.fixture(scope="session")
def amqp_url(rabbitmq_server: RabbitMQService) -> str:
    """The session's RabbitMQ URL."""
    if not rabbitmq_server.running:
        rabbitmq_server.start()
    return rabbitmq_server.url()
