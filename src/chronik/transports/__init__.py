"""Message transports, chosen by URL; ``open_transport`` is the way in.

``memory://[name]``, ``postgresql://...`` (a table, LISTEN/NOTIFY and ``FOR UPDATE SKIP
LOCKED``), ``nats://...`` (JetStream) and ``amqp://...`` (RabbitMQ quorum queues). Adapters are
imported by path and only when their URL is used; a missing extra names itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from chronik.errors import ConfigurationError, MissingExtraError
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

# scheme -> (module, class, extra that provides its driver, driver module)
_ADAPTERS: dict[str, tuple[str, str, str | None, str | None]] = {
    "memory": ("chronik.transports.memory", "MemoryTransport", None, None),
    "postgresql": ("chronik.transports.postgres", "PostgresTransport", "postgres", "asyncpg"),
    "postgres": ("chronik.transports.postgres", "PostgresTransport", "postgres", "asyncpg"),
    "nats": ("chronik.transports.nats", "NatsTransport", "nats", "nats"),
    "amqp": ("chronik.transports.rabbitmq", "RabbitMQTransport", "rabbitmq", "aio_pika"),
    "amqps": ("chronik.transports.rabbitmq", "RabbitMQTransport", "rabbitmq", "aio_pika"),
}


def open_transport(url: str, **options: Any) -> Transport:
    """The transport for ``url``; use it as ``async with open_transport(url) as transport``.

    Common option: ``max_body_bytes`` (default 1 MiB). Adapter options go in the URL's query
    string or as keywords (see each adapter).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"invalid transport URL {url!r}: expected memory://, postgresql://, nats:// or amqp://"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _ADAPTERS:
        raise ConfigurationError(
            f"unknown transport scheme {scheme!r} in {url!r}: expected one of "
            + ", ".join(sorted(_ADAPTERS))
        )
    module_name, class_name, extra, driver = _ADAPTERS[scheme]
    if driver is not None:
        try:
            importlib.import_module(driver)
        except ImportError:
            raise MissingExtraError(extra or scheme, driver) from None
    module = importlib.import_module(module_name)
    cls: Callable[..., Transport] = getattr(module, class_name)
    return cls(url, **options)
