"""Message transports, chosen by URL; ``open_transport`` is the way in.

``memory://[name]``, ``postgresql://...`` (a table, LISTEN/NOTIFY and ``FOR UPDATE SKIP
LOCKED``), ``nats://...`` (JetStream), ``amqp://...`` (RabbitMQ quorum queues) and
``cloudevents+http(s)://...`` (POSTs CloudEvents, push only). Adapters are imported by path and
only when their URL is used; a missing extra names itself.

What lives here: ``message`` (Message, Delivery, FailurePolicy and their checks), ``source``
(the adapter's side of the port: Source, Incoming), ``consumer`` (the one consumer loop, which
runs on a Source), ``base`` (the Transport port: validates, then starts consumers), ``inbox``
(dedupe of deliveries) and one module per broker (``memory``, ``postgres``, ``nats``,
``rabbitmq``), each imported only by ``open_transport``. ``dead_letters`` is the port's
dead-letter side (list, inspect, retry, drop), with ``<broker>_dead_letters`` beside the brokers.
Per-key order across competing consumers: ``partitions`` (key partitions and the fan-in source
NATS and RabbitMQ consume through) and ``parks`` (keys parked for a whole group, with
``postgres_parks`` and ``nats_parks`` imported by scheme when a consumer parks).

Imports: chronik.errors, chronik.messages, chronik.adapters, chronik.store (``inbox`` and the
PostgreSQL adapter's tables only); never chronik.server, chronik.cli, chronik.projections or
the command path. Inside: message <- source <- consumer <- base <- adapters, never upwards.
"""

from __future__ import annotations

from typing import Any

from chronik.adapters import Adapters, load_adapter
from chronik.transports.base import (
    CAUSATION_ID,
    CORRELATION_ID,
    Delivery,
    FailurePolicy,
    Handler,
    Message,
    Transport,
)
from chronik.transports.consumer import Consumer
from chronik.transports.inbox import Inbox, MemoryInbox, StoreInbox

__all__ = [
    "CAUSATION_ID",
    "CORRELATION_ID",
    "Consumer",
    "Delivery",
    "FailurePolicy",
    "Handler",
    "Inbox",
    "MemoryInbox",
    "Message",
    "StoreInbox",
    "Transport",
    "open_transport",
]

_CLOUDEVENTS = ("chronik.transports.cloudevents", "CloudEventsTransport", "cloudevents", "httpx")
_ADAPTERS: Adapters = {
    "memory": ("chronik.transports.memory", "MemoryTransport", None, None),
    "postgresql": ("chronik.transports.postgres", "PostgresTransport", "postgres", "asyncpg"),
    "postgres": ("chronik.transports.postgres", "PostgresTransport", "postgres", "asyncpg"),
    "nats": ("chronik.transports.nats", "NatsTransport", "nats", "nats"),
    "amqp": ("chronik.transports.rabbitmq", "RabbitMQTransport", "rabbitmq", "aio_pika"),
    "amqps": ("chronik.transports.rabbitmq", "RabbitMQTransport", "rabbitmq", "aio_pika"),
    "cloudevents+http": _CLOUDEVENTS,
    "cloudevents+https": _CLOUDEVENTS,
    "kafka": ("chronik.transports.kafka", "KafkaTransport", "kafka", "aiokafka"),
}


def open_transport(url: str, **options: Any) -> Transport:
    """The transport for ``url``; use it as ``async with open_transport(url) as transport``.

    Common option: ``max_body_bytes`` (default 1 MiB). Adapter options go in the URL's query
    string or as keywords (see each adapter).
    """
    _, _, cls = load_adapter(url, _ADAPTERS, "transport")
    transport: Transport = cls(url, **options)
    return transport
