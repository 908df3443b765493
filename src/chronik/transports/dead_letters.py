"""Transport dead letters: browse, inspect, retry and drop what consumers gave up on.

A consumer that gives up on a message sends it to its dead-letter queue (``{topic}.{group}.dead``
or ``{queue}.dead`` by default) with the headers ``dead-topic``, ``dead-group``,
``dead-reason``, ``dead-attempts`` and ``dead-at`` (``chronik.transports.consumer``).
``DeadLetterPort`` (a base of ``Transport``) lets an operator see them without consuming them:

- ``dead_letters(queue, limit=, after=)``: a page, oldest first, each a ``DeadLetter`` (its
  ``id``, the original topic and group, reason, attempts, time, headers, body size and a
  preview); ``after`` is the ``id`` of the last one of the previous page;
- ``inspect(queue, id)``: one of them, with its whole body;
- ``retry(queue, id)``: publish the original message again **to its group only** (other
  groups of the topic never see it again; a queue's message goes back on the queue), then
  remove it from the dead-letter queue;
- ``drop(queue, id)``: remove it.

A dead letter that is not (or no longer) there, e.g. one retried or dropped already, is a
``NotFound``: a retry never delivers twice. ``id`` is the adapter's handle: the entry's number
(memory), row id (PostgreSQL), stream sequence (NATS) or message id (RabbitMQ). Retries and
drops are logged (``chronik.transports.dead_letters``) with what and who (``by``).

Adapters implement three primitives (``_dead_page``, ``_dead_get``, ``_dead_take``): memory
in its module, the others in a module of their own beside it (``postgres_dead_letters``,
``nats_dead_letters``, ``rabbitmq_dead_letters``, loaded by URL scheme when first used, so the
consumption code of an adapter stays apart); the checks, the conversion and the audit log are
here, once. Imports ``chronik.adapters`` and ``chronik.transports.message`` and ``source``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final, Literal, Protocol

import msgspec

from chronik.adapters import Adapters, load_adapter, safe_url
from chronik.errors import ConfigurationError, InvalidMessage, NotFound
from chronik.transports.message import Message, check_topic
from chronik.transports.source import Incoming

__all__ = [
    "DEAD_HEADERS",
    "ONLY_GROUP",
    "DeadLetter",
    "DeadLetterBox",
    "DeadLetterPort",
    "Redelivery",
    "StoredDead",
    "for_group",
    "redelivery",
]

log = logging.getLogger("chronik.transports.dead_letters")
#: the dead-letter side of adapters that keep it in a module of its own (imported when used)
_BOXES: Adapters = {
    "postgresql": ("chronik.transports.postgres_dead_letters", "PostgresDeadLetters", None, None),
    "postgres": ("chronik.transports.postgres_dead_letters", "PostgresDeadLetters", None, None),
    "nats": ("chronik.transports.nats_dead_letters", "NatsDeadLetters", None, None),
    "amqp": ("chronik.transports.rabbitmq_dead_letters", "RabbitMQDeadLetters", None, None),
    "amqps": ("chronik.transports.rabbitmq_dead_letters", "RabbitMQDeadLetters", None, None),
    "kafka": ("chronik.transports.kafka_dead_letters", "KafkaDeadLetters", None, None),
}
#: the headers a consumer adds when it dead-letters a message
DEAD_HEADERS: Final = ("dead-topic", "dead-group", "dead-reason", "dead-attempts", "dead-at")
#: on a message retried to one group of a topic where the broker cannot address a group
#: (NATS): the other groups' consumers acknowledge it without handling it
ONLY_GROUP: Final = "chronik-only-group"
PREVIEW_BYTES: Final = 256
MAX_LIMIT: Final = 1000
_HANDLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@~-]{0,127}")


class StoredDead(msgspec.Struct, frozen=True):
    """A dead letter as an adapter read it: its handle, the message as it sits in the
    dead-letter queue (``body`` may be cut to a preview by a page read) and its body size."""

    handle: str
    message: Message
    size: int


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A dead letter as an operator sees it (``body`` only from ``inspect``)."""

    id: str
    queue: str
    message_id: str
    topic: str
    group: str
    reason: str
    attempts: int
    at: float | None
    key: str | None
    headers: dict[str, str]
    size: int
    preview: str
    body: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the body as text, undecodable bytes replaced)."""
        out = msgspec.to_builtins(self)
        out["body"] = None if self.body is None else self.body.decode("utf-8", "replace")
        return dict(out)


class Redelivery(msgspec.Struct, frozen=True):
    """Where a retried dead letter goes: a group of a topic, or a queue (``group`` "")."""

    kind: Literal["topic", "queue"]
    name: str
    group: str
    message: Message


def _describe(queue: str, stored: StoredDead, full: bool) -> DeadLetter:
    m = stored.message
    h = m.headers
    try:
        attempts = int(h.get("dead-attempts", "0"))
    except ValueError:
        attempts = 0
    try:
        at: float | None = float(h["dead-at"]) if "dead-at" in h else None
    except ValueError:
        at = None
    preview = m.body[:PREVIEW_BYTES].decode("utf-8", "replace")
    return DeadLetter(
        id=stored.handle,
        queue=queue,
        message_id=m.id,
        topic=h.get("dead-topic", ""),
        group=h.get("dead-group", ""),
        reason=h.get("dead-reason", ""),
        attempts=attempts,
        at=at,
        key=m.key,
        headers={k: v for k, v in h.items() if k not in DEAD_HEADERS},
        size=stored.size,
        preview="".join(c if c.isprintable() else " " for c in preview),
        body=m.body if full else None,
    )


def redelivery(stored: StoredDead) -> Redelivery:
    """Where a retry of ``stored`` goes, with the original message (dead-* headers off)."""
    m = stored.message
    topic = m.headers.get("dead-topic", "")
    group = m.headers.get("dead-group", "")
    try:
        check_topic(topic)
    except InvalidMessage:
        raise InvalidMessage(
            f"dead letter {stored.handle} names no original topic ({topic!r}): drop it",
            field="dead-topic",
        ) from None
    headers = {k: v for k, v in m.headers.items() if k not in DEAD_HEADERS and k != ONLY_GROUP}
    original = Message(topic=topic, body=m.body, id=m.id, headers=headers, key=m.key)
    return Redelivery("topic" if group else "queue", topic, group, original)


def for_group(incoming: Incoming, group: str) -> bool:
    """Whether a message retried for one group (``ONLY_GROUP``) is for ``group``; if so its
    ``ONLY_GROUP`` header is taken off, so the handler sees the original message."""
    m = incoming.message
    if m.headers.get(ONLY_GROUP) != group:
        return False
    headers = {k: v for k, v in m.headers.items() if k != ONLY_GROUP}
    incoming.message = msgspec.structs.replace(m, headers=headers)
    return True


def _check(queue: object, handle: object = None, field: str = "id") -> str:
    check_topic(queue, "queue")
    if handle is not None and (not isinstance(handle, str) or not _HANDLE_RE.fullmatch(handle)):
        raise InvalidMessage(f"invalid dead letter id {handle!r}", field=field)
    return str(queue)


class DeadLetterBox(Protocol):
    """An adapter's dead-letter primitives kept in a module of their own (see ``_BOXES``)."""

    async def page(self, queue: str, after: str | None, limit: int) -> list[StoredDead]: ...

    async def get(self, queue: str, handle: str) -> StoredDead | None: ...

    async def take(self, queue: str, handle: str, retry: bool) -> StoredDead | None: ...


class DeadLetterPort:
    """The dead-letter side of ``Transport`` (see the module docstring)."""

    url: str

    async def _ready(self) -> None:
        raise NotImplementedError

    async def dead_letters(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``queue``, oldest first, after the one ``after``
        names (the last id of the previous page); nothing is consumed."""
        _check(queue, after, "after")
        if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
            raise InvalidMessage(f"limit must be 1..{MAX_LIMIT}, not {limit!r}", field="limit")
        await self._ready()
        return [_describe(queue, s, False) for s in await self._dead_page(queue, after, limit)]

    async def inspect(self, queue: str, id: str) -> DeadLetter:
        """One dead letter of ``queue`` with its whole body; NotFound if it is not there."""
        _check(queue, id)
        await self._ready()
        stored = await self._dead_get(queue, id)
        if stored is None:
            raise _not_found(queue, id)
        return _describe(queue, stored, True)

    async def retry(self, queue: str, id: str, *, by: str | None = None) -> DeadLetter:
        """Publish dead letter ``id`` again to its original group only (or queue), then
        remove it; NotFound if it is not there (retried or dropped already)."""
        _check(queue, id)
        await self._ready()
        taken = await self._dead_take(queue, id, True)
        if taken is None:
            raise _not_found(queue, id)
        letter = _describe(queue, taken, True)
        where = f"{letter.topic}/{letter.group}" if letter.group else letter.topic
        log.warning(
            "dead letter %s (message %s) of %s retried to %s by %s",
            id,
            letter.message_id,
            queue,
            where,
            by or "unknown",
        )
        return letter

    async def drop(self, queue: str, id: str, *, by: str | None = None) -> DeadLetter:
        """Remove dead letter ``id`` from ``queue`` for good; NotFound if it is not there."""
        _check(queue, id)
        await self._ready()
        taken = await self._dead_take(queue, id, False)
        if taken is None:
            raise _not_found(queue, id)
        letter = _describe(queue, taken, True)
        log.warning(
            "dead letter %s (message %s, from %s) of %s dropped by %s",
            id,
            letter.message_id,
            letter.topic,
            queue,
            by or "unknown",
        )
        return letter

    # --- adapter primitives (an adapter overrides them, or has a box in _BOXES) ----------------

    async def _dead_page(self, queue: str, after: str | None, limit: int) -> list[StoredDead]:
        """Up to ``limit`` messages of ``queue`` after handle ``after``, oldest first."""
        return list(await self._box().page(queue, after, limit))

    async def _dead_get(self, queue: str, handle: str) -> StoredDead | None:
        """The message ``handle`` names in ``queue`` (None: not there)."""
        return await self._box().get(queue, handle)

    async def _dead_take(self, queue: str, handle: str, retry: bool) -> StoredDead | None:
        """Remove the message ``handle`` names from ``queue`` and, with ``retry``, deliver
        ``redelivery(it)`` first, as one step where the broker allows (None: not there, and
        nothing delivered)."""
        return await self._box().take(queue, handle, retry)

    def _box(self) -> DeadLetterBox:
        """The adapter's dead-letter module, loaded by URL scheme like the adapter itself."""
        box = self.__dict__.get("_dead_letter_box")
        if box is None:
            try:
                _, _, cls = load_adapter(self.url, _BOXES, "dead-letter")
            except ConfigurationError:
                raise ConfigurationError(
                    f"{safe_url(self.url)}: this transport keeps no browsable dead letters"
                ) from None
            box = self.__dict__["_dead_letter_box"] = cls(self)
        found: DeadLetterBox = box
        return found


def _not_found(queue: str, handle: str) -> NotFound:
    return NotFound(f"no dead letter {handle!r} in {queue!r} (retried or dropped already?)")
