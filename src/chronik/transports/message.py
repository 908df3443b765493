"""Transport messages, deliveries and failure policies, with the checks every adapter shares."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal

import msgspec

from chronik.errors import InvalidMessage, PayloadTooLarge
from chronik.messages import new_event_id

__all__ = [
    "CAUSATION_ID",
    "CORRELATION_ID",
    "DEFAULT_MAX_BODY_BYTES",
    "Delivery",
    "FailurePolicy",
    "Handler",
    "Message",
    "check_group",
    "check_message",
    "check_topic",
    "headers_from",
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


def headers_from(mapping: Mapping[str, Any]) -> dict[str, str]:
    """Only the chronik headers of a broker's header map (names lower-cased, values as text)."""
    return {str(k).lower(): str(v) for k, v in mapping.items()}
