"""The message transport port: messages, the two patterns, and the checks every adapter shares.

Adapters implement a few primitives (``_open``, ``_close``, ``_publish``, ``_send`` and
``_source``, which hands out a ``Source`` of deliveries for one consumer, see
``chronik.transports.source``); the public methods here validate input once and start a
``chronik.transports.consumer.Consumer`` on that source, which runs handlers, acks, retries and
dead letters the same way on every adapter, so the conformance suite in
``chronik.testing.transport_conformance`` holds them all to one semantics.

Two patterns: ``publish``/``subscribe`` (fan-out: every *group* subscribed to a topic gets each
message; consumers of one group compete) and ``send``/``listen`` (one queue, competing
consumers). Delivery is at least once: a message is acknowledged only after its handler
returned, and redelivered after a failure or a crash.
"""

from __future__ import annotations

import abc
import asyncio
from types import TracebackType
from typing import ClassVar, Literal, Self

from chronik.adapters import safe_url
from chronik.errors import ConfigurationError, InvalidMessage, TransportClosed
from chronik.transports.consumer import Consumer
from chronik.transports.dead_letters import DeadLetter, DeadLetterPort
from chronik.transports.message import (
    CAUSATION_ID,
    CORRELATION_ID,
    DEFAULT_MAX_BODY_BYTES,
    Delivery,
    FailurePolicy,
    Handler,
    Message,
    check_group,
    check_message,
    check_topic,
)
from chronik.transports.parks import open_parks
from chronik.transports.source import Incoming, Source

__all__ = [
    "CAUSATION_ID",
    "CORRELATION_ID",
    "DEFAULT_MAX_BODY_BYTES",
    "DeadLetter",
    "Delivery",
    "FailurePolicy",
    "Handler",
    "Incoming",
    "Message",
    "Source",
    "Transport",
    "check_group",
    "check_topic",
]


class Transport(DeadLetterPort, abc.ABC):
    """A message transport; use ``async with open_transport(url) as transport``; its dead
    letters: ``dead_letters``, ``inspect``, ``retry``, ``drop`` (see DeadLetterPort)."""

    scheme: ClassVar[str]
    dedupes: ClassVar[bool] = False  # True if the broker drops a re-published message id
    # True if same-key messages stay in order across competing consumers of a group (not only
    # within one consumer)
    orders_across_consumers: ClassVar[bool] = False

    def __init__(self, url: str, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if type(max_body_bytes) is not int or not 0 < max_body_bytes <= 64 * 1024 * 1024:
            raise ConfigurationError(f"max_body_bytes must be 1..64 MiB, not {max_body_bytes!r}")
        self.url = url
        self.max_body_bytes = max_body_bytes
        self._state: Literal["new", "open", "closed"] = "new"
        self._consumers: set[Consumer] = set()
        self._opening: asyncio.Lock | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> Self:
        """Connect (idempotent); raises TransportUnavailable if the broker cannot be reached."""
        if self._state == "closed":
            raise TransportClosed(f"{self!r} is closed")
        if self._state == "new":
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:  # concurrent first uses connect once
                if self._state == "new":
                    await self._open()
                    self._state = "open"
        if self.closed:  # closed while we waited for the connection
            raise TransportClosed(f"{self!r} is closed")
        return self

    async def close(self, grace: float = 0.0) -> None:
        """Stop every consumer (their in-flight messages go back; with ``grace`` seconds,
        running handlers may finish first) and disconnect."""
        if self._state == "closed":
            return
        was_open = self._state == "open"
        self._state = "closed"
        await asyncio.gather(*(consumer.stop(grace) for consumer in list(self._consumers)))
        if was_open:
            await self._close()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._state == "closed"

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {safe_url(self.url)} {self._state}>"

    async def _ready(self) -> None:
        if self._state != "open":
            await self.open()

    # --- the two patterns ----------------------------------------------------------------------

    async def publish(self, message: Message) -> None:
        """Fan ``message`` out to every group subscribed to its topic; returns once the broker
        has it. Raises InvalidMessage/PayloadTooLarge (nothing sent) or TransportUnavailable
        (retry with the same message id)."""
        check_message(message, self.max_body_bytes)
        await self._ready()
        await self._publish(message)

    async def send(self, message: Message) -> None:
        """Put ``message`` on the queue named by its ``topic`` (one listener gets it)."""
        check_message(message, self.max_body_bytes)
        await self._ready()
        await self._send(message)

    async def subscribe(
        self,
        topic: str,
        group: str,
        handler: Handler,
        *,
        policy: FailurePolicy | None = None,
        concurrency: int = 1,
        prefetch: int = 0,
        dead_letter_queue: str | None = None,
    ) -> Consumer:
        """Start a consumer of ``group`` on ``topic``; the durable group exists once this
        returns, and gets every message published from then on, even while no consumer runs.
        Consumers of the same group share its messages."""
        check_topic(topic)
        check_group(group)
        dead = check_topic(dead_letter_queue or f"{topic}.{group}.dead", "dead_letter_queue")
        return await self._consume(
            "topic", topic, group, handler, policy, concurrency, prefetch, dead
        )

    async def listen(
        self,
        queue: str,
        handler: Handler,
        *,
        policy: FailurePolicy | None = None,
        concurrency: int = 1,
        prefetch: int = 0,
        dead_letter_queue: str | None = None,
    ) -> Consumer:
        """Start a competing consumer of ``queue`` (messages sent with ``send``)."""
        check_topic(queue, "queue")
        dead = check_topic(dead_letter_queue or f"{queue}.dead", "dead_letter_queue")
        return await self._consume("queue", queue, "", handler, policy, concurrency, prefetch, dead)

    async def _consume(
        self,
        kind: Literal["topic", "queue"],
        name: str,
        group: str,
        handler: Handler,
        policy: FailurePolicy | None,
        concurrency: int,
        prefetch: int,
        dead_letter_queue: str,
    ) -> Consumer:
        if not callable(handler):
            raise InvalidMessage("handler must be an async callable taking a Delivery")
        if type(concurrency) is not int or not 1 <= concurrency <= 1024:
            raise InvalidMessage(f"concurrency must be 1..1024, not {concurrency!r}")
        if type(prefetch) is not int or not 0 <= prefetch <= 10_000:
            raise InvalidMessage(f"prefetch must be 0..10000, not {prefetch!r}")
        prefetch = prefetch or max(64, 2 * concurrency)
        policy = policy or FailurePolicy()
        await self._ready()
        # policy park: parked keys the group's other consumers see (None: the broker gives a
        # key to one consumer while it runs, so the consumer's own memory is enough)
        parks = await open_parks(self, kind, name, group) if policy.then == "park" else None
        source = await self._source(kind, name, group, prefetch)
        consumer = Consumer(
            self,
            source,
            handler,
            policy,
            concurrency=concurrency,
            prefetch=prefetch,
            kind=kind,
            name=name,
            group=group,
            dead_letter_queue=dead_letter_queue,
            parks=parks,
        )
        self._consumers.add(consumer)
        consumer.start()
        return consumer

    def _forget(self, consumer: Consumer) -> None:
        self._consumers.discard(consumer)

    # --- adapter primitives --------------------------------------------------------------------

    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect to the broker."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Disconnect."""

    @abc.abstractmethod
    async def _publish(self, message: Message) -> None:
        """Store ``message`` once for every group of its topic (deduplicated if ``dedupes``)."""

    @abc.abstractmethod
    async def _send(self, message: Message) -> None:
        """Store ``message`` on its queue."""

    async def _send_dead_letter(self, message: Message) -> None:
        """Store a dead letter on its dead-letter queue: like ``_send``, except that brokers
        which partition keyed messages keep a dead-letter queue in one piece."""
        await self._send(message)

    @abc.abstractmethod
    async def _source(
        self, kind: Literal["topic", "queue"], name: str, group: str, prefetch: int
    ) -> Source:
        """Create the durable group (or queue) if missing and return a source of deliveries."""
