"""The RabbitMQ transport's dead letters: borrowed from their quorum queue and given back.

AMQP has no peek. The choices were: dead letters in a stream queue (browsable by offset, but
a stream cannot delete one message, so retry and drop would need tombstones and a reader of
the whole stream), drained into another store (the transport has none, and a second copy
must then be kept in step), or **borrowing**: read the dead-letter queue with ``basic.get``
and no ack on a channel of our own, then close the channel, which hands every unacked
message back to the queue. chronik borrows: the dead letters stay where they are, in a
durable replicated quorum queue (``chronik.q.<queue>``, as today), nothing is copied, and a
crash of the browsing process gives them back too, because the broker requeues the unacked
messages of a lost channel. The handle of a dead letter is its message id.

- every call borrows the whole queue (at most ``SCAN_LIMIT`` messages) and gives it back
  at once, so the messages keep their order (a quorum queue puts a message given back on
  its own behind the others);
- ``retry`` finds the id among them, publishes the original message (publisher
  confirm) to its group's queue alone (``chronik.g.<group>.<topic>``, its key's partition
  when the adapter partitions, or ``chronik.q.<queue>``), then acks the dead letter; a
  concurrent retry cannot borrow the same message, and a later one does not find it
  (NotFound); ``drop`` acks it without publishing.

Costs, stated: while a page is read its messages are invisible to a consumer of the
dead-letter queue (moments); each borrow counts as a delivery in the quorum queue's
``x-delivery-count``, so a ``delivery-limit`` policy on ``chronik.q.*.dead`` queues would
drop dead letters after that many browses: set none there (RabbitMQ 3.x sets none; 4.x sets
20 by default, so give those queues a policy with ``delivery-limit: -1``). Loaded by
``chronik.transports.dead_letters`` for ``amqp://`` URLs; imports the RabbitMQ adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from chronik.errors import TransportUnavailable
from chronik.transports.dead_letters import StoredDead, redelivery
from chronik.transports.message import Message, headers_from
from chronik.transports.rabbitmq import AMQP_ERRORS, RabbitMQTransport

__all__ = ["SCAN_LIMIT", "RabbitMQDeadLetters"]

#: the most messages one page, inspect, retry or drop borrows from a dead-letter queue
SCAN_LIMIT: Final = 10_000
_KEY = "chronik-key"


class RabbitMQDeadLetters:
    """Dead letters of one ``RabbitMQTransport`` (see the module docstring)."""

    def __init__(self, transport: RabbitMQTransport) -> None:
        self.t = transport

    @contextlib.asynccontextmanager
    async def _borrowing(self, queue: str) -> AsyncIterator[AbstractQueue | None]:
        """The dead-letter queue on a channel of its own (None: no such queue); leaving
        closes the channel, which gives back every message borrowed and not acked."""
        try:
            channel = await self.t.connection().channel(publisher_confirms=False)
        except AMQP_ERRORS as exc:
            raise TransportUnavailable(f"RabbitMQ dead letters: {exc!r}") from exc
        try:
            try:
                found = await channel.declare_queue(f"chronik.q.{queue}", passive=True)
            except AMQP_ERRORS:  # no such queue (the broker closed the channel)
                found = None
            yield found
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _borrow(self, queue: AbstractQueue) -> AsyncIterator[AbstractIncomingMessage]:
        for _ in range(SCAN_LIMIT):
            try:
                msg = await queue.get(no_ack=False, fail=False, timeout=10)
            except AMQP_ERRORS as exc:
                raise TransportUnavailable(f"RabbitMQ dead letters: {exc!r}") from exc
            if msg is None:
                return
            yield msg

    async def page(self, queue: str, after: str | None, limit: int) -> list[StoredDead]:
        out: list[StoredDead] = []
        passed = after is None
        async with self._borrowing(queue) as dlq:
            if dlq is None:
                return []
            async for msg in self._borrow(dlq):  # all of them: given back, they keep their order
                if passed and len(out) < limit:
                    out.append(_stored(queue, msg))
                passed = passed or msg.message_id == after
        return out

    async def get(self, queue: str, handle: str) -> StoredDead | None:
        found: StoredDead | None = None
        async with self._borrowing(queue) as dlq:
            if dlq is None:
                return None
            async for msg in self._borrow(dlq):
                if found is None and msg.message_id == handle:
                    found = _stored(queue, msg)
        return found

    async def take(self, queue: str, handle: str, retry: bool) -> StoredDead | None:
        target: AbstractIncomingMessage | None = None
        async with self._borrowing(queue) as dlq:
            if dlq is None:
                return None
            async for msg in self._borrow(dlq):
                if target is None and msg.message_id == handle:
                    target = msg
            if target is None:
                return None
            stored = _stored(queue, target)
            if retry:
                await self._redeliver(stored)
            try:
                await target.ack()
            except AMQP_ERRORS as exc:  # the channel went: the dead letter is back
                raise TransportUnavailable(
                    f"RabbitMQ dead letters: {exc!r}", outcome_unknown=True
                ) from exc
            return stored

    async def _redeliver(self, stored: StoredDead) -> None:
        """Publish the original message (with confirm) to its group's queue alone."""
        again = redelivery(stored)
        m = again.message
        t = self.t
        name = f"chronik.g.{again.group}.{m.topic}" if again.group else f"chronik.q.{m.topic}"
        partition = getattr(t, "_partition", None)  # adapters that partition keyed messages
        if m.key is not None and partition is not None:
            name += partition(m.key)
        t.connection()
        channel = t._channel
        assert channel is not None
        try:
            await t._declare(channel, name)
        except AMQP_ERRORS as exc:
            raise TransportUnavailable(f"RabbitMQ declare {name}: {exc!r}") from exc
        await t._put(channel.default_exchange, m, name)


def _stored(queue: str, msg: AbstractIncomingMessage) -> StoredDead:
    headers = headers_from(msg.headers or {})
    headers.pop("x-delivery-count", None)
    key = headers.pop(_KEY, None)
    message = Message(topic=queue, body=msg.body, id=msg.message_id or "", headers=headers, key=key)
    return StoredDead(msg.message_id or "", message, len(msg.body))
