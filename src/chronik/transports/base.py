"""The message transport port: messages, the two patterns, and the checks every adapter shares.

Adapters implement a few primitives (``_open``, ``_close``, ``_publish``, ``_send`` and
``_source``, which hands out a ``Source`` of deliveries for one consumer); the public methods
here validate input once, and ``chronik.transports.consumer`` runs handlers, acks, retries and
dead letters the same way on every adapter, so the conformance suite in
``chronik.testing.transport_conformance`` holds them all to one semantics.

Two patterns: ``publish``/``subscribe`` (fan-out: every *group* subscribed to a topic gets each
message; consumers of one group compete) and ``send``/``listen`` (one queue, competing
consumers). Delivery is at least once: a message is acknowledged only after its handler
returned, and redelivered after a failure or a crash.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Self

import msgspec

from chronik.errors import InvalidMessage, PayloadTooLarge, TransportClosed
from chronik.messages import new_event_id

if TYPE_CHECKING:
    from chronik.transports.consumer import Consumer

__all__ = [
    "CAUSATION_ID",
    "CORRELATION_ID",
    "DEFAULT_MAX_BODY_BYTES",
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

DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
MAX_HEADERS: Final = 64
MAX_HEADER_VALUE: Final = 4096
CORRELATION_ID: Final = "correlation-id"
CAUSATION_ID: Final = "causation-id"
# topic and queue names: dot-separated segments; valid NATS subjects and AMQP routing keys
_TOPIC_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}(\.[a-z0-9][a-z0-9_-]{0,63}){0,7}")
_GROUP_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
_HEADER_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
_KEY_MAX: Final = 256


def check_topic(name: object, what: str = "topic") -> str:
    """``name`` if it is a valid topic or queue name, else InvalidMessage."""
    if not isinstance(name, str) or len(name) > 255 or not _TOPIC_RE.fullmatch(name):
        raise InvalidMessage(
            f"invalid {what} {name!r}: expected dot-separated [a-z0-9][a-z0-9_-]* segments",
            field=what,
        )
    return name


def check_group(name: object) -> str:
    """``name`` if it is a valid subscriber group name, else InvalidMessage."""
    if not isinstance(name, str) or not _GROUP_RE.fullmatch(name):
        raise InvalidMessage(
            f"invalid group {name!r}: expected [a-z0-9][a-z0-9_-]{{0,63}}", field="group"
        )
    return name


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A message: producer-assigned ``id`` (reuse it on retry), ``topic`` (or queue), string
    ``headers`` (lower-case names; ``correlation-id``/``causation-id`` by convention), a bytes
    ``body`` and an optional ordering ``key`` (same key: in order; different keys: independent).
    """

    topic: str
    body: bytes
    id: str = msgspec.field(default_factory=new_event_id)
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    key: str | None = None

    @property
    def correlation_id(self) -> str | None:
        """The correlation id header, if any."""
        return self.headers.get(CORRELATION_ID)

    @property
    def causation_id(self) -> str | None:
        """The causation id header, if any."""
        return self.headers.get(CAUSATION_ID)


def check_message(message: object, max_body_bytes: int) -> Message:
    """``message`` if every part of it is in shape, else InvalidMessage / PayloadTooLarge."""
    if not isinstance(message, Message):
        raise InvalidMessage(f"expected a Message, got {type(message).__name__}")
    check_topic(message.topic)
    if not isinstance(message.id, str) or not _ID_RE.fullmatch(message.id):
        raise InvalidMessage(
            f"invalid message id {message.id!r}: 1-128 of [A-Za-z0-9_.:@-]", field="id"
        )
    if type(message.body) is not bytes:
        raise InvalidMessage(
            f"a message body must be bytes, not {type(message.body).__name__}", field="body"
        )
    if len(message.body) > max_body_bytes:
        raise PayloadTooLarge(len(message.body), max_body_bytes)
    key = message.key
    if key is not None and (
        not isinstance(key, str) or not 0 < len(key) <= _KEY_MAX or not key.isprintable()
    ):
        raise InvalidMessage(f"invalid key {key!r}: 1-{_KEY_MAX} printable chars", field="key")
    headers = message.headers
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
        raise InvalidMessage(f"headers must be a dict of at most {MAX_HEADERS}", field="headers")
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_RE.fullmatch(name):
            raise InvalidMessage(
                f"invalid header name {name!r}: expected [a-z][a-z0-9-]{{0,63}}", field="headers"
            )
        if (
            not isinstance(value, str)
            or len(value) > MAX_HEADER_VALUE
            or not (value.isprintable() or value == "")
        ):
            raise InvalidMessage(
                f"header {name!r} must be printable text up to {MAX_HEADER_VALUE} chars",
                field="headers",
            )
    return message


class Delivery(msgspec.Struct, frozen=True):
    """A message as a handler sees it: which delivery ``attempt`` this is (1 = first) and the
    ``group`` it was delivered to (``""`` for a queue)."""

    message: Message
    attempt: int
    group: str

    @property
    def id(self) -> str:
        """The producer-assigned message id (the inbox key)."""
        return self.message.id

    @property
    def topic(self) -> str:
        """The topic or queue the message was delivered from."""
        return self.message.topic

    @property
    def body(self) -> bytes:
        """The message body."""
        return self.message.body

    @property
    def headers(self) -> dict[str, str]:
        """The message headers."""
        return self.message.headers

    @property
    def key(self) -> str | None:
        """The ordering key, if any."""
        return self.message.key


Handler = Callable[[Delivery], Awaitable[Any]]


class FailurePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What a consumer does when its handler raises: retry ``retries`` more times with
    exponential backoff (``backoff`` seconds doubling up to ``backoff_max``), then:

    - ``dead_letter``: move the message to the dead-letter queue and go on;
    - ``park``: dead-letter it, and dead-letter the later messages of its key too (kept in
      order for a replay) while this consumer runs;
    - ``stop``: leave the message unacknowledged and stop the consumer (ConsumerStopped).

    A message the broker already delivered more than ``retries + 1`` times (crash loops) goes
    straight to that outcome, so a poison message never loops forever.
    """

    retries: int = 3
    backoff: float = 0.05
    backoff_max: float = 5.0
    then: Literal["dead_letter", "park", "stop"] = "dead_letter"

    def __post_init__(self) -> None:
        if type(self.retries) is not int or not 0 <= self.retries <= 1000:
            raise InvalidMessage(f"retries must be 0..1000, not {self.retries!r}")
        if not 0 <= self.backoff <= self.backoff_max <= 3600:
            raise InvalidMessage("need 0 <= backoff <= backoff_max <= 3600 seconds")
        if self.then not in ("dead_letter", "park", "stop"):
            raise InvalidMessage(f"then must be dead_letter, park or stop, not {self.then!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff_max, self.backoff * 2 ** min(attempt - 1, 30)))


class Incoming(msgspec.Struct):
    """A delivery as an adapter hands it over: the message, the broker's delivery count and
    the adapter's own handle for acking it."""

    message: Message
    attempt: int
    token: Any = None


class Source(abc.ABC):
    """One consumer's connection to its group or queue (implemented by each adapter)."""

    @abc.abstractmethod
    async def fetch(self, limit: int, wait: float) -> list[Incoming]:
        """Up to ``limit`` deliveries, waiting at most ``wait`` seconds for the first one.

        Raises TransportUnavailable while the broker is unreachable (the consumer retries).
        """

    @abc.abstractmethod
    async def ack(self, incoming: Incoming) -> None:
        """Acknowledge: the message is done for this group."""

    @abc.abstractmethod
    async def release(self, incoming: Incoming) -> None:
        """Give the message back for redelivery (at once, without penalty)."""

    async def touch(self, incoming: Incoming) -> None:  # noqa: B027 - optional
        """Tell the broker the message is still being worked on (long retries)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop fetching; unacknowledged deliveries go back to the broker."""


class Transport(abc.ABC):
    """A message transport; use ``async with open_transport(url) as transport``."""

    scheme: ClassVar[str]
    dedupes: ClassVar[bool] = False  # True if the broker drops a re-published message id

    def __init__(self, url: str, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if type(max_body_bytes) is not int or not 0 < max_body_bytes <= 64 * 1024 * 1024:
            raise InvalidMessage(f"max_body_bytes must be 1..64 MiB, not {max_body_bytes!r}")
        self.url = url
        self.max_body_bytes = max_body_bytes
        self._state: Literal["new", "open", "closed"] = "new"
        self._consumers: set[Consumer] = set()

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> Self:
        """Connect (idempotent); raises TransportUnavailable if the broker cannot be reached."""
        if self._state == "closed":
            raise TransportClosed(f"{self!r} is closed")
        if self._state == "new":
            await self._open()
            self._state = "open"
        return self

    async def close(self) -> None:
        """Stop every consumer (their in-flight messages go back) and disconnect."""
        if self._state == "closed":
            return
        was_open = self._state == "open"
        self._state = "closed"
        for consumer in list(self._consumers):
            await consumer.stop()
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
        return f"<{type(self).__name__} {_safe_url(self.url)} {self._state}>"

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
        from chronik.transports.consumer import Consumer

        if not callable(handler):
            raise InvalidMessage("handler must be an async callable taking a Delivery")
        if type(concurrency) is not int or not 1 <= concurrency <= 1024:
            raise InvalidMessage(f"concurrency must be 1..1024, not {concurrency!r}")
        if type(prefetch) is not int or not 0 <= prefetch <= 10_000:
            raise InvalidMessage(f"prefetch must be 0..10000, not {prefetch!r}")
        prefetch = prefetch or max(64, 2 * concurrency)
        await self._ready()
        source = await self._source(kind, name, group, prefetch)
        consumer = Consumer(
            self,
            source,
            handler,
            policy or FailurePolicy(),
            concurrency=concurrency,
            prefetch=prefetch,
            kind=kind,
            name=name,
            group=group,
            dead_letter_queue=dead_letter_queue,
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

    @abc.abstractmethod
    async def _source(
        self, kind: Literal["topic", "queue"], name: str, group: str, prefetch: int
    ) -> Source:
        """Create the durable group (or queue) if missing and return a source of deliveries."""


def _safe_url(url: str) -> str:
    """``url`` without its password."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def headers_from(mapping: Mapping[str, Any]) -> dict[str, str]:
    """Only the chronik headers of a broker's header map (names lower-cased, values as text)."""
    return {str(k).lower(): str(v) for k, v in mapping.items()}
