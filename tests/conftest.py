"""Shared fixtures: real servers (PostgreSQL, NATS, RabbitMQ) started once per session on a
free port.

A service that cannot start skips the tests that need it, unless CHRONIK_REQUIRE_SERVICES=1,
which turns that into a failure.

Fault drills and soak tests are marked ``drill``; ``make test`` runs them at scale 1 (bounded),
``make soak`` runs only them with CHRONIK_SOAK=10, and the ``scale`` fixture says which.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator

import pytest

from chronik.testing.kafka_server import KafkaService
from chronik.testing.mariadb_server import MariaDBService
from chronik.testing.redis_server import RedisService
from chronik.testing.replica import PostgresReplica
from chronik.testing.services import (
    NatsService,
    PostgresService,
    RabbitMQService,
    Service,
    ServiceNotStarted,
    unavailable,
)

_schemas = itertools.count(1)
SCALE = max(1, int(os.environ.get("CHRONIK_SOAK", "1") or "1"))
#: RabbitMQ boots in ~5 s: when a collected test needs it, it boots in the background from the
#: end of collection on, while the tests before the first one that needs it run
_RABBITMQ = RabbitMQService()
_early_boots: list[threading.Thread] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "drill: a fault drill or soak test, bounded in make test, long in make soak"
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start booting RabbitMQ if a collected test needs it (a failure to boot is left to the
    fixture, which starts it again and reports it)."""
    needed = any("rabbitmq_server" in getattr(i, "fixturenames", ()) for i in session.items)
    if needed and not session.config.option.collectonly:
        boot = threading.Thread(target=_boot_quietly, args=(_RABBITMQ,), daemon=True)
        boot.start()
        _early_boots.append(boot)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop an early-booted server that no test used (the fixture stops a used one)."""
    for boot in _early_boots:
        boot.join()
    _RABBITMQ.stop()


def _boot_quietly(service: Service) -> None:
    try:
        service.start()
    except Exception:  # the fixture's own start says what went wrong
        service.stop()


@pytest.fixture(scope="session")
def scale() -> int:
    """How much longer drills run: 1 in make test, CHRONIK_SOAK (10 in make soak) otherwise."""
    return SCALE


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresService]:
    """A PostgreSQL 15 cluster for the whole session (fsync off: tests, not benchmarks)."""
    service = PostgresService(durable=False)
    try:
        service.start()
    except ServiceNotStarted as exc:
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


@pytest.fixture(scope="session")
def postgres_replica(postgres_server: PostgresService) -> Iterator[PostgresReplica]:
    """A hot standby of the session's PostgreSQL (``pg_basebackup -R``, streaming on
    loopback) for the whole session; tests open stores on it with the primary's schema."""
    if not postgres_server.running:
        postgres_server.start()
    service = PostgresReplica(postgres_server)
    for _ in _session_service(service, "PostgreSQL hot standby"):
        yield service


@pytest.fixture
def postgres_restart(postgres_server: PostgresService) -> Callable[[], None]:
    """Restart the session's PostgreSQL server (same port, same data)."""
    return postgres_server.restart


def _session_service(service: Service, what: str) -> Iterator[Service]:
    try:
        service.start()
    except ServiceNotStarted as exc:
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
def redis_server() -> Iterator[RedisService]:
    """A ``redis-server`` (AOF, appendfsync always) for the whole session (tests use fresh
    key prefixes)."""
    service = RedisService()
    for _ in _session_service(service, "Redis"):
        yield service


@pytest.fixture
def redis_url(redis_server: RedisService) -> str:
    """A store URL on its own, fresh key prefix of the session's Redis server."""
    if not redis_server.running:
        redis_server.start()
    return redis_server.url(prefix=f"t{next(_schemas)}")


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBService]:
    """A ``mariadbd`` of our own for the whole session (fast test settings: see
    chronik.testing.mariadb_server; tests use fresh databases)."""
    service = MariaDBService()
    for _ in _session_service(service, "MariaDB"):
        yield service


@pytest.fixture
def mysql_url(mariadb_server: MariaDBService) -> str:
    """A store URL on its own, fresh database (created by the store on open)."""
    if not mariadb_server.running:
        mariadb_server.start()
    return mariadb_server.url(f"t{next(_schemas)}")


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQService]:
    """A RabbitMQ node of our own for the whole session (tests use fresh queue names)."""
    service = _RABBITMQ
    for boot in _early_boots:
        boot.join()
    for _ in _session_service(service, "RabbitMQ"):
        yield service


@pytest.fixture(scope="session")
def amqp_url(rabbitmq_server: RabbitMQService) -> str:
    """The session's RabbitMQ URL."""
    if not rabbitmq_server.running:
        rabbitmq_server.start()
    return rabbitmq_server.url()


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[KafkaService]:
    """A Kafka-protocol broker (Tansu, memory storage) for the whole session (tests use fresh
    topic names)."""
    service = KafkaService()
    for _ in _session_service(service, "Kafka (Tansu)"):
        yield service


@pytest.fixture
def kafka_url(kafka_server: KafkaService) -> str:
    """The session's ``kafka://`` URL (the broker restarted if a test stopped it), with a 2 s
    session timeout: the broker holds each group join for half of it (6 s by default)."""
    if not kafka_server.running:
        kafka_server.start()
    return kafka_server.url() + "?session_timeout=2"
