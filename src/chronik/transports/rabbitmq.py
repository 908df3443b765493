"""The RabbitMQ transport (aio-pika): quorum queues, publisher confirms, manual acks.

``amqp://user:password@host:5672/vhost`` (option ``partitions``, default 8, the same in every
process; aio-pika's own URL options, such as ``reconnect_interval``, pass through). Topology,
declared on demand: a durable topic exchange ``chronik.topics``; one quorum queue per
subscriber group, ``chronik.g.<group>.<topic>``, bound with the topic as routing key; one
quorum queue per queue, ``chronik.q.<queue>``, fed through the default exchange. Publishing
waits for the broker's confirm. RabbitMQ does not drop a re-published message id: consumers
absorb duplicates with an inbox. The robust connection reconnects by itself and restores
channels and consumers; deliveries of a lost channel are requeued by the broker.

Per-key order across competing consumers (``chronik.transports.partitions``): a keyed message
goes to its key's partition, ``<topic>._<p>`` (routing key) or ``chronik.q.<queue>._<p>``, and
every group (or queue) has one quorum queue per partition, ``chronik.g.<group>.<topic>._<p>``,
declared with ``x-single-active-consumer``: one consumer at a time gets a partition; when its
channel goes (stop, crash, lost connection) the broker returns its unacked messages ahead of
the rest, then the next consumer takes over. A consumer therefore never cancels a partition
while it holds messages of it: it closes the channel, which hands back and hands over at once.
Dead letters go to their queue unpartitioned.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import aio_pika
import aiormq.exceptions
import pamqp.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.abc import FieldTable

from chronik.errors import TransportClosed, TransportUnavailable
from chronik.transports.base import Message, Transport
from chronik.transports.message import headers_from
from chronik.transports.partitions import (
    DEFAULT_PARTITIONS,
    check_partitions,
    partition_of,
    partition_suffix,
)
from chronik.transports.source import Incoming, Source

__all__ = ["RabbitMQTransport"]

AMQP_ERRORS = (
    aiormq.exceptions.AMQPError,
    pamqp.exceptions.PAMQPException,
    aio_pika.exceptions.AMQPException,
    ConnectionError,
    OSError,
    TimeoutError,
    RuntimeError,  # aio-pika: "channel closed" and friends while reconnecting
)
EXCHANGE = "chronik.topics"
_KEY = "Chronik-Key"
_QUORUM: FieldTable = {"x-queue-type": "quorum"}
_SINGLE: FieldTable = {**_QUORUM, "x-single-active-consumer": True}


class RabbitMQTransport(Transport):
    """Messages in RabbitMQ quorum queues."""

    scheme = "amqp"
    dedupes = False
    orders_across_consumers = True

    def __init__(self, url: str, *, partitions: int = DEFAULT_PARTITIONS, **options: int) -> None:
        super().__init__(url, **options)
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        given = [v for k, v in query if k == "partitions"]
        self.partitions = check_partitions(given[-1] if given else partitions)
        self._amqp_url = url  # aio-pika's URL: without our option
        if given:
            rest = urlencode([(k, v) for k, v in query if k != "partitions"])
            self._amqp_url = parts._replace(query=rest).geturl()
        self._conn: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._declared: set[str] = set()

    async def _open(self) -> None:
        url = self._amqp_url
        if "reconnect_interval=" not in url:
            url += ("&" if "?" in url else "?") + "reconnect_interval=0.5"
        try:
            self._conn = await aio_pika.connect_robust(url, timeout=10)
            self._channel = await self._conn.channel(publisher_confirms=True)
            self._exchange = await self._channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
        except AMQP_ERRORS as exc:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
            raise TransportUnavailable(f"RabbitMQ transport: {exc!r}") from exc

    async def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 5)

    def connection(self) -> AbstractRobustConnection:
        """The robust connection (raises TransportClosed after close)."""
        if self._conn is None or self.closed:
            raise TransportClosed(f"{self!r} is closed")
        return self._conn

    async def _declare(self, channel: AbstractChannel, queue: str) -> AbstractQueue:
        partition = queue.rpartition(".")[2].startswith("_")  # one consumer at a time
        arguments = _SINGLE if partition else _QUORUM
        return await channel.declare_queue(queue, durable=True, arguments=arguments)

    def _partition(self, key: str) -> str:
        return "." + partition_suffix(partition_of(key, self.partitions))

    async def _publish(self, message: Message) -> None:
        self.connection()
        assert self._exchange is not None
        routing_key = message.topic
        if message.key is not None:
            routing_key += self._partition(message.key)
        await self._put(self._exchange, message, routing_key)

    async def _send_dead_letter(self, message: Message) -> None:
        await self._send(message, partitioned=False)

    async def _send(self, message: Message, *, partitioned: bool = True) -> None:
        self.connection()
        assert self._channel is not None
        queue = f"chronik.q.{message.topic}"
        if partitioned and message.key is not None:
            queue += self._partition(message.key)
        if queue not in self._declared:
            try:
                await self._declare(self._channel, queue)
            except AMQP_ERRORS as exc:
                raise TransportUnavailable(f"RabbitMQ declare {queue}: {exc!r}") from exc
            self._declared.add(queue)
        await self._put(self._channel.default_exchange, message, queue)

    async def _put(self, exchange: AbstractExchange, m: Message, routing_key: str) -> None:
        headers: dict[str, Any] = dict(m.headers)
        if m.key is not None:
            headers[_KEY] = m.key
        amqp = aio_pika.Message(
            m.body,
            message_id=m.id,
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await exchange.publish(amqp, routing_key, timeout=10)
        except AMQP_ERRORS as exc:
            raise TransportUnavailable(f"RabbitMQ publish: {exc!r}", outcome_unknown=True) from exc

    async def _source(
        self, kind: Literal["topic", "queue"], name: str, group: str, prefetch: int
    ) -> Source:
        queue_name = f"chronik.g.{group}.{name}" if kind == "topic" else f"chronik.q.{name}"
        failed: BaseException | None = None
        # A setup that met a connection reset starts over: RabbitMQ 3.10 sometimes closes the
        # connection (541 INTERNAL_ERROR) on a basic.consume of a quorum queue while another
        # consumer goes (rabbitmq-server#13775 reports it with single active consumer).
        for attempt in range(5):
            channel: AbstractChannel | None = None
            try:
                channel = await self.connection().channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=prefetch)
                queue = await self._declare(channel, queue_name)
                if kind == "topic":
                    await queue.bind(EXCHANGE, routing_key=name)
                source = _RabbitSource(channel, queue, name)
                source.tag = await queue.consume(source.deliver, no_ack=False)
                for p in range(self.partitions):  # one channel: closing it hands all over
                    suffix = "." + partition_suffix(p)
                    partition = await self._declare(channel, queue_name + suffix)
                    if kind == "topic":
                        await partition.bind(EXCHANGE, routing_key=name + suffix)
                    await partition.consume(source.deliver, no_ack=False)
                return source
            except AMQP_ERRORS as exc:
                failed = exc
                if channel is not None:  # never leave a half-made consumer holding a partition
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(channel.close(), 5)
                await asyncio.sleep(0.25 * 2**attempt)
        raise TransportUnavailable(f"RabbitMQ consumer {queue_name}: {failed!r}") from failed


class _RabbitSource(Source):
    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, name: str) -> None:
        self.channel = channel
        self.queue = queue
        self.name = name
        self.tag = ""
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def deliver(self, msg: AbstractIncomingMessage) -> None:
        self.inbox.put_nowait(msg)

    async def fetch(self, limit: int, wait: float) -> list[Incoming]:
        if not self.inbox.empty():
            first = self.inbox.get_nowait()
        else:
            try:
                first = await asyncio.wait_for(self.inbox.get(), wait)
            except TimeoutError:
                return []
        out = [self._incoming(first)]
        while len(out) < limit and not self.inbox.empty():
            out.append(self._incoming(self.inbox.get_nowait()))
        return out

    def _incoming(self, msg: AbstractIncomingMessage) -> Incoming:
        headers = headers_from(msg.headers or {})
        count = headers.pop("x-delivery-count", "0")
        key = headers.pop(_KEY.lower(), None)
        message = Message(
            topic=self.name, body=msg.body, id=msg.message_id or "", headers=headers, key=key
        )
        return Incoming(message, int(count) + 1, msg)

    async def ack(self, incoming: Incoming) -> None:
        msg: AbstractIncomingMessage = incoming.token
        try:  # written without waiting for the socket to drain (a lost ack is a redelivery)
            await msg.channel.basic_ack(msg.delivery_tag or 0, wait=False)
        except AMQP_ERRORS as exc:  # the channel is gone: the broker requeued it
            raise TransportUnavailable(f"RabbitMQ ack: {exc!r}") from exc

    async def release(self, incoming: Incoming) -> None:
        try:
            await incoming.token.nack(requeue=True)
        except AMQP_ERRORS as exc:
            raise TransportUnavailable(f"RabbitMQ nack: {exc!r}") from exc

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.queue.cancel(self.tag), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.channel.close(), 5)
